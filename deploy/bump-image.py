#!/usr/bin/env python3
"""Record an image in an environment's values file: the GitOps step of the release pipeline.

    deploy/bump-image.py deploy/charts/backend/values-staging.yaml \
        --repository ghcr.io/example-org/backend --tag sha-1a2b3c4 --digest sha256:...

Rewrites only the `repository:`, `tag:` and `digest:` lines of the top-level `image:` block
(adding `repository:` and `digest:` when missing) and keeps every comment, so the commit or pull
request shows a diff of those lines alone. The repository is the one the pipeline pushed to, so
a fork never deploys the template's placeholder image. Standard library only: it runs on a bare
CI runner. Exits 0 with "unchanged" when the file already names that image.
"""

import argparse
import re
import sys

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
# registry[:port]/path, lower case, no tag or digest (the distribution spec's name grammar).
REPOSITORY_RE = re.compile(
    r"^[a-z0-9]+([.-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+|__[a-z0-9]+)*)+$")


def set_image(text: str, tag: str, digest: str, repository: str = "") -> str:
    """Returns text with image.tag, image.digest and (if given) image.repository replaced; the
    digest and repository lines are added after the tag line when missing."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"^image:\s*(#.*)?$", line))
    except StopIteration:
        raise SystemExit("no top-level `image:` block") from None
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\S", lines[i])), len(lines))
    values = {"tag": tag, "digest": digest}
    if repository:
        values["repository"] = repository
    found = {}
    for i in range(start + 1, end):
        match = re.match(r"^(\s+)(repository|tag|digest):", lines[i])
        if match and match[2] in values:
            indent, key = match.groups()
            found[key] = i
            lines[i] = f'{indent}{key}: "{values[key]}"\n'
    if "tag" not in found:
        raise SystemExit("the `image:` block has no `tag:` line")
    indent = re.match(r"^(\s+)", lines[found["tag"]]).group(1)
    if "digest" not in found:
        lines.insert(found["tag"] + 1, f'{indent}digest: "{digest}"\n')
    if repository and "repository" not in found:
        lines.insert(found["tag"], f'{indent}repository: "{repository}"\n')
    return "".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("values_file")
    parser.add_argument("--repository", default="",
                        help="registry/path the image was pushed to, e.g. ghcr.io/example-org/backend")
    parser.add_argument("--tag", required=True, help="immutable tag, e.g. sha-1a2b3c4 or 1.2.3")
    parser.add_argument("--digest", default="", help="sha256:<64 hex> of the pushed image")
    args = parser.parse_args()
    if not TAG_RE.match(args.tag) or args.tag == "latest":
        raise SystemExit(f"refusing tag {args.tag!r}: use an immutable tag")
    if args.digest and not DIGEST_RE.match(args.digest):
        raise SystemExit(f"refusing digest {args.digest!r}: expected sha256:<64 hex>")
    if args.repository and not REPOSITORY_RE.match(args.repository):
        raise SystemExit(f"refusing repository {args.repository!r}: expected registry/path, lower case, no tag")
    with open(args.values_file, encoding="utf-8") as f:
        before = f.read()
    after = set_image(before, args.tag, args.digest, args.repository)
    if after == before:
        print(f"{args.values_file}: unchanged")
        return 0
    with open(args.values_file, "w", encoding="utf-8") as f:
        f.write(after)
    name = f"{args.repository}:" if args.repository else ""
    print(f"{args.values_file}: image {name}{args.tag}{'@' + args.digest if args.digest else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
