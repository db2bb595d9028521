#!/usr/bin/env python3
"""Pin an Argo CD Application's chart to a Git revision: the chart half of a promotion.

    deploy/bump-revision.py deploy/argocd/application-production.yaml --revision v1.2.3

Rewrites only the `targetRevision:` line of the source that holds the chart (the one with a
`path:` under deploy/charts/), in `spec.source` or in one entry of `spec.sources`, and keeps every
comment, so the promotion pull request shows a one-line diff beside the image bump
(deploy/bump-image.py). A `ref:` source (values files read from another revision) is left alone.
Standard library only: it runs on a bare CI runner. Exits 0 with "unchanged" when the file
already names that revision.
"""

import argparse
import re
import sys

# A release tag, as release.yaml's trigger accepts them.
REVISION_RE = re.compile(r"^v[0-9]+\.[0-9]+\.[0-9]+$")


def source_blocks(lines):
    """(start, end) line ranges of each source mapping under spec.source / spec.sources."""
    blocks = []
    for i, line in enumerate(lines):
        single = re.match(r"^(\s+)source:\s*(#.*)?$", line)
        multi = re.match(r"^(\s+)sources:\s*(#.*)?$", line)
        if not (single or multi):
            continue
        indent = len((single or multi)[1])
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip() and not lines[j].lstrip().startswith("#")
                    and len(lines[j]) - len(lines[j].lstrip()) <= indent), len(lines))
        if single:
            blocks.append((i + 1, end))
            continue
        items = [j for j in range(i + 1, end) if re.match(r"^\s*- ", lines[j])
                 and len(lines[j]) - len(lines[j].lstrip()) <= indent + 2]
        for k, start in enumerate(items):
            blocks.append((start, items[k + 1] if k + 1 < len(items) else end))
    return blocks


def set_revision(text: str, revision: str) -> str:
    """Returns text with the chart source's targetRevision set to revision."""
    lines = text.splitlines(keepends=True)
    chart_sources = []
    for start, end in source_blocks(lines):
        block = "".join(lines[start:end])
        if re.search(r"^[\s-]*path:\s*['\"]?deploy/charts/", block, re.M):
            chart_sources.append((start, end))
    if len(chart_sources) != 1:
        raise SystemExit(f"expected one source with a deploy/charts/ path, found {len(chart_sources)}")
    start, end = chart_sources[0]
    for i in range(start, end):
        match = re.match(r"^([\s-]*)targetRevision:", lines[i])
        if match:
            lines[i] = f"{match[1]}targetRevision: {revision}\n"
            return "".join(lines)
    raise SystemExit("the chart source has no `targetRevision:` line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("application_file")
    parser.add_argument("--revision", required=True, help="release tag, e.g. v1.2.3")
    args = parser.parse_args()
    if not REVISION_RE.match(args.revision):
        raise SystemExit(f"refusing revision {args.revision!r}: production follows release tags vX.Y.Z")
    with open(args.application_file, encoding="utf-8") as f:
        before = f.read()
    after = set_revision(before, args.revision)
    if after == before:
        print(f"{args.application_file}: unchanged")
        return 0
    with open(args.application_file, "w", encoding="utf-8") as f:
        f.write(after)
    print(f"{args.application_file}: targetRevision {args.revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
