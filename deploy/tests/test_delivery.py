#!/usr/bin/env python3
"""Assertions on the release pipeline and the supply chain: what actionlint, zizmor and checkov
cannot see in .github/, app/Dockerfile, deny.toml and the GitOps bump scripts.

    test_delivery.py                     # the checks; last line `RESULT passed=N failed=M`
    test_delivery.py --audit-data BIN    # the crate list cargo-auditable embedded in BIN

One function per behaviour; each prints `ok` or `FAIL` with the reason. The checks read files
only (no network, no Docker): a job output traced back to `secrets.`, a release tag that would
rebuild, a promotion PR that would start no CI, a bump that forgets the repository, a base image
without a digest, cargo deny missing from CI.

--audit-data reads the `.dep-v0` section of a static binary (zlib-compressed JSON, written by
`cargo auditable`; syft reads the same section for the image's SBOM), checks that it lists the
service and its crates at their Cargo.lock versions, and prints how many. scripts/static.sh runs
it on the binaries it builds. It needs the standard library only.
"""

import hashlib
import json
import re
import struct
import subprocess
import sys
import tempfile
import tomllib
import traceback
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The service's name, written once in app/Cargo.toml; the chart, its image and objects follow it.
SERVICE = tomllib.loads((ROOT / "app" / "Cargo.toml").read_text())["package"]["name"]
CHART = ROOT / "deploy" / "charts" / SERVICE
WORKFLOWS = ROOT / ".github" / "workflows"
DOCKERFILE = ROOT / "app" / "Dockerfile"
DOCS = ROOT / "docs" / "deployment.md"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# --- helpers ---------------------------------------------------------------------------------


def yaml():
    import yaml as module  # only the checks need PyYAML; --audit-data runs on a bare python3

    return module


def workflow(name):
    return yaml().safe_load((WORKFLOWS / name).read_text())


def workflows():
    return {p.name: yaml().safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.y*ml"))}


def expressions(value):
    """Every `${{ ... }}` body in value (a string, or any nesting of lists and dicts)."""
    if isinstance(value, dict):
        return [e for v in value.values() for e in expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in expressions(v)]
    return re.findall(r"\$\{\{(.*?)\}\}", str(value), re.S) if value is not None else []


def step_runs(job):
    return [str(s.get("run", "")) for s in job.get("steps", [])]


def uses(job, action):
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action + "@")]


def runs_on_tags(job):
    """False when the job's `if` confines it to main; a job without `if` runs on tags too."""
    condition = str(job.get("if", ""))
    return not re.search(r"github\.ref\s*==\s*'refs/heads/main'", condition)


def runs_on_main(job):
    condition = str(job.get("if", ""))
    return not re.search(r"startsWith\(github\.ref,\s*'refs/tags/", condition)


def secret_paths(wf):
    """(job, output, chain) for every job output of wf whose value can derive from a secret.

    The trace follows what the runner does with values: a job output is an expression over step
    outputs; a `run` step's outputs may hold anything its environment holds (the step's `env`,
    the job's, the workflow's, and what earlier steps wrote to $GITHUB_ENV) and any expression
    inlined in its script; an action's outputs may hold anything its `with` inputs hold;
    `needs.<job>.outputs.<name>` continues in that job. A chain that reaches `secrets.` is a
    job output the runner will drop ("Skip output ... since it may contain secret")."""
    jobs = wf.get("jobs", {})
    found = []

    def trace(job_name, expr, chain, seen):
        if (job_name, expr) in seen:
            return None
        seen = seen | {(job_name, expr)}
        if re.search(r"\bsecrets\.", expr):
            return chain + [f"{job_name}: {expr.strip()}"]
        job = jobs[job_name]
        for dep, out in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", expr):
            value = jobs.get(dep, {}).get("outputs", {}).get(out, "")
            for inner in expressions(value):
                hit = trace(dep, inner, chain + [f"{job_name}: needs.{dep}.outputs.{out}"], seen)
                if hit:
                    return hit
        for name in re.findall(r"\benv\.([\w-]+)", expr):
            for scope in (job.get("env", {}), wf.get("env", {})):
                for inner in expressions(scope.get(name, "")):
                    hit = trace(job_name, inner, chain + [f"{job_name}: env.{name}"], seen)
                    if hit:
                        return hit
        steps = job.get("steps", [])
        for step_id in re.findall(r"steps\.([\w-]+)\.outputs\.", expr):
            index = next((i for i, s in enumerate(steps) if s.get("id") == step_id), None)
            if index is None:
                continue
            step = steps[index]
            sources = expressions(step.get("with", {})) + expressions(step.get("env", {}))
            if "run" in step:
                sources += expressions(step["run"]) + expressions(job.get("env", {}))
                sources += expressions(wf.get("env", {}))
                for earlier in steps[:index]:
                    if "GITHUB_ENV" in str(earlier.get("run", "")):
                        sources += expressions(earlier.get("env", {})) + expressions(earlier["run"])
            for inner in sources:
                hit = trace(job_name, inner, chain + [f"{job_name}: steps.{step_id}"], seen)
                if hit:
                    return hit
        return None

    for job_name, job in jobs.items():
        for out, value in (job.get("outputs") or {}).items():
            for expr in expressions(value):
                hit = trace(job_name, expr, [f"{job_name}.outputs.{out}"], frozenset())
                if hit:
                    found.append((job_name, out, " <- ".join(hit)))
    return found


def tools_pin(name):
    match = re.search(rf"^{name}=(\S+)", (ROOT / "scripts" / "tools.sh").read_text(), re.M)
    assert match, f"scripts/tools.sh pins no {name}"
    return match[1]


def from_lines():
    """(image reference, stage name or None) of every FROM in app/Dockerfile."""
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if match:
            out.append((match[1], match[2]))
        elif line.upper().startswith("FROM"):
            out.append((line, "unparsed"))
    return out


def run_script(script, *args):
    return subprocess.run([sys.executable, ROOT / "deploy" / script, *map(str, args)],
                          capture_output=True, text=True)


# --- job outputs and secrets (defect 1) ------------------------------------------------------


@test
def test_no_job_output_derives_from_a_secret():
    for name, wf in workflows().items():
        paths = secret_paths(wf)
        assert not paths, f"{name}: " + "; ".join(f"{j}.outputs.{o} ({chain})" for j, o, chain in paths)


@test
def test_the_secret_trace_sees_a_secret_through_env_and_needs():
    # Negative control: the shape of the bug this guards against (issue #12, defect 1).
    wf = yaml().safe_load("""
jobs:
  a:
    outputs: {image: "${{ steps.n.outputs.image }}"}
    steps:
      - id: n
        env: {REGISTRY: "${{ secrets.DOCKER_REGISTRY }}"}
        run: echo "image=$REGISTRY/x" >> "$GITHUB_OUTPUT"
  b:
    needs: a
    outputs: {again: "${{ needs.a.outputs.image }}"}
    steps: [{run: "true"}]
  c:
    outputs: {fine: "${{ steps.m.outputs.digest }}"}
    steps:
      - id: m
        uses: docker/build-push-action@0000000000000000000000000000000000000000
        with: {tags: "${{ vars.REGISTRY }}/x"}
""")
    flagged = {(j, o) for j, o, _ in secret_paths(wf)}
    assert flagged == {("a", "image"), ("b", "again")}, flagged


@test
def test_registry_and_app_id_are_variables_not_secrets():
    text = (WORKFLOWS / "release.yaml").read_text()
    assert "vars.REGISTRY" in text and "secrets.DOCKER_REGISTRY" not in text, \
        "the registry host must be a configuration variable (it is part of every image name)"
    # The image name is made where no secret is held: a Docker Hub name contains DOCKER_USER.
    wf = workflow("release.yaml")
    for name, job in wf["jobs"].items():
        if "image" in (job.get("outputs") or {}):
            assert "secrets." not in json.dumps(job), f"{name} outputs the image name but holds a secret"


# --- a tag promotes, it does not rebuild (defect 2) ------------------------------------------


@test
def test_a_version_tag_rebuilds_nothing_and_tags_the_digest_main_built():
    wf = workflow("release.yaml")
    jobs = wf["jobs"]
    tag_jobs = {n: j for n, j in jobs.items() if runs_on_tags(j)}
    for name, job in tag_jobs.items():
        assert not uses(job, "docker/build-push-action"), f"{name} builds on a tag"
        for run in step_runs(job):
            assert not re.search(r"docker (buildx )?build\b|buildx bake", run), f"{name} builds on a tag"
    builders = [n for n, j in jobs.items() if uses(j, "docker/build-push-action")]
    assert builders and all(not runs_on_tags(jobs[n]) for n in builders), "the image is not built on main only"
    for name in builders:
        tags = " ".join(str(s.get("with", {}).get("tags", "")) for s in uses(jobs[name], "docker/metadata-action"))
        assert "type=sha" in tags and "type=semver" not in tags, f"{name}: main's build must carry sha-<short> only"
    retag = [(n, r) for n, j in tag_jobs.items() for r in step_runs(j) if "imagetools create" in r]
    assert retag, "no job re-tags an existing digest on a tag"
    for name, run in retag:
        assert re.search(r'"\$\{?IMAGE\}?@\$\{?DIGEST\}?"', run), f"{name}: imagetools create must copy IMAGE@DIGEST"
    finds = [r for j in tag_jobs.values() for r in step_runs(j) if "imagetools inspect" in r and "sha-" in r]
    assert finds, "the tag path does not look up the sha-<short> image main built"


@test
def test_every_signature_is_by_digest():
    signs = [(f, r) for f, wf in workflows().items() for j in wf["jobs"].values()
             for r in step_runs(j) if "cosign sign" in r]
    assert signs, "nothing is signed"
    for name, run in signs:
        for line in run.splitlines():
            if "cosign sign" in line:
                assert re.search(r"@\$\{?\w*(DIGEST|digest)\}?", line), f"{name}: `{line.strip()}` signs no digest"


# --- the promotion PR starts CI (defect 3) ---------------------------------------------------


@test
def test_the_promotion_pr_is_opened_with_a_github_app_token():
    wf = workflow("release.yaml")
    openers = {n: j for n, j in wf["jobs"].items() if any("gh pr create" in r for r in step_runs(j))}
    assert openers, "no job opens the promotion PR"
    for name, job in openers.items():
        tokens = uses(job, "actions/create-github-app-token")
        assert tokens, f"{name} opens a PR without a GitHub App token"
        token_id = tokens[0].get("id")
        assert token_id and tokens[0]["with"].get("private-key", "").startswith("${{ secrets."), tokens[0]
        assert tokens[0]["with"].get("permission-pull-requests") == "write", "the App token is not scoped"
        for step in job["steps"]:
            if "gh pr create" in str(step.get("run", "")) or "push" in str(step.get("run", "")):
                gh_token = str(step.get("env", {}).get("GH_TOKEN", ""))
                assert f"steps.{token_id}.outputs.token" in gh_token, f"{name}: {step.get('name')} uses {gh_token!r}"
        assert "github.token" not in json.dumps(job) and "secrets.GITHUB_TOKEN" not in json.dumps(job), \
            f"{name} still hands the workflow token to something"
        assert "write" not in (job.get("permissions") or {}).values(), \
            f"{name}: the workflow token needs no write permission: {job.get('permissions')}"


# --- the bump writes the repository; production pins the chart (defects 4 and 8) -----------


@test
def test_every_bump_writes_the_repository_it_pushed_to():
    runs = [(f, r) for f, wf in workflows().items() for j in wf["jobs"].values() for r in step_runs(j)
            if "bump-image.py" in r]
    assert len(runs) >= 2, "fewer image bumps than staging + production"
    for name, run in runs:
        assert "--repository" in run, f"{name}: a bump without --repository keeps the placeholder image"


@test
def test_bump_writes_repository_tag_and_digest_on_a_copy():
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    repository = f"ghcr.io/a-fork/{SERVICE}"
    for env in ("staging", "production"):
        original = (CHART / f"values-{env}.yaml").read_text()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"values-{env}.yaml"
            path.write_text(original)
            done = run_script("bump-image.py", path, "--repository", repository, "--tag", "1.2.3", "--digest", digest)
            assert done.returncode == 0, done.stderr
            bumped = path.read_text()
            image = yaml().safe_load(bumped)["image"]
            assert (image["repository"], image["tag"], image["digest"]) == (repository, "1.2.3", digest), image
            removed = set(original.splitlines()) - set(bumped.splitlines())
            assert all(re.match(r"\s+(repository|tag|digest):", line) for line in removed), removed
            again = run_script("bump-image.py", path, "--repository", repository, "--tag", "1.2.3", "--digest", digest)
            assert "unchanged" in again.stdout, "a second identical bump changed the file"
            for bad in ("GHCR.io/Org/x", f"{repository}:1.2.3", "no-registry"):
                refused = run_script("bump-image.py", path, "--repository", bad, "--tag", "1.2.3")
                assert refused.returncode != 0, f"the bump accepted repository {bad!r}"


@test
def test_the_production_promotion_moves_the_chart_revision():
    wf = workflow("release.yaml")
    runs = [r for j in wf["jobs"].values() if any("gh pr create" in x for x in step_runs(j)) for r in step_runs(j)]
    assert any("bump-revision.py" in r and "application-production.yaml" in r for r in runs), \
        "the promotion PR does not move the production Application's targetRevision"
    app_file = ROOT / "deploy" / "argocd" / "application-production.yaml"
    multi = (
        "spec:\n  sources:\n    # the chart\n    - repoURL: https://example.com/r.git\n"
        f"      targetRevision: v0.0.1\n      path: deploy/charts/{SERVICE}\n"
        "      helm:\n        valueFiles: [$values/x.yaml]\n"
        "    - repoURL: https://example.com/r.git\n      targetRevision: main\n      ref: values\n"
    )
    for original in (app_file.read_text(), multi):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "application-production.yaml"
            path.write_text(original)
            done = run_script("bump-revision.py", path, "--revision", "v1.2.3")
            assert done.returncode == 0, done.stderr
            spec = yaml().safe_load(path.read_text())["spec"]
            sources = spec.get("sources") or [spec["source"]]
            revisions = {("path" in s): s["targetRevision"] for s in sources}
            assert revisions[True] == "v1.2.3", revisions
            if False in revisions:
                assert revisions[False] == "main", "the values source moved with the chart"
            changed = [a for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
            assert len(changed) <= 1, changed
            assert run_script("bump-revision.py", path, "--revision", "main").returncode != 0, \
                "production accepted a branch instead of a release tag"


# --- the chart as a versioned, signed OCI artifact -------------------------------------------


@test
def test_a_release_publishes_the_chart_to_oci_and_signs_it_by_digest():
    wf = workflow("release.yaml")
    chart_jobs = {n: j for n, j in wf["jobs"].items() if any("helm push" in r for r in step_runs(j))}
    assert chart_jobs, "no job pushes the chart"
    for name, job in chart_jobs.items():
        assert not runs_on_main(job), f"{name} publishes chart versions from main"
        text = "\n".join(step_runs(job))
        assert re.search(r"helm package .*--version \"\$VERSION\"", text), f"{name}: chart not versioned by the tag"
        assert re.search(r"helm push \S+ \"oci://", text), f"{name}: not pushed to an OCI registry"
        assert re.search(r"cosign sign --yes \"\S+@\$digest\"", text), f"{name}: the chart is not signed by digest"
        assert (job.get("permissions") or {}).get("id-token") == "write", f"{name} cannot sign keylessly"
        assert "bump-image.py" in text and "--digest" in text, f"{name}: the chart does not pin the released image"


# --- base images, SBOM, cargo deny, the CI container (defects 12-15) ------------------------


@test
def test_every_base_image_is_a_literal_tag_at_a_digest():
    stages = set()
    for ref, stage in from_lines():
        assert stage != "unparsed", f"unparsed FROM line: {ref}"
        if ref in stages:
            continue  # FROM an earlier stage
        assert "$" not in ref, f"FROM {ref}: an ARG in FROM hides the image from Dependabot"
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", ref), f"FROM {ref}: not image:tag@sha256:<digest>"
        if stage:
            stages.add(stage)
    assert not re.search(r"^ARG\s+RUST_VERSION", DOCKERFILE.read_text(), re.M), "the Rust version is still an ARG"


@test
def test_ci_runs_make_test_in_the_dockerfile_rust_image_on_debian_12():
    rust_image = next(ref for ref, _ in from_lines() if ref.startswith("rust:"))
    assert "-bookworm@" in rust_image, f"{rust_image} is not Debian 12"
    wf = workflow("ci.yaml")
    make_test = [j for j in wf["jobs"].values() if any(r.strip().endswith("make test") for r in step_runs(j))]
    assert make_test, "no job runs make test"
    for job in wf["jobs"].values():
        container = job.get("container")
        assert container, f"a ci job runs on the runner's Ubuntu: {job.get('name')}"
        image = container if isinstance(container, str) else container["image"]
        assert image == rust_image, f"ci container {image} is not app/Dockerfile's {rust_image}"
    assert "--privileged" in str(make_test[0]["container"].get("options", "")), \
        "the game day needs namespaces and bind mounts: a privileged container"


@test
def test_the_image_is_built_with_cargo_auditable_for_an_sbom_with_crates():
    text = DOCKERFILE.read_text()
    assert f"cargo install --locked cargo-auditable --version {tools_pin('AUDITABLE_VERSION')}" in text, \
        "app/Dockerfile does not install scripts/tools.sh's cargo-auditable"
    assert f"cargo-zigbuild --version {tools_pin('ZIGBUILD_VERSION')}" in text, "cargo-zigbuild versions differ"
    assert re.search(r"cargo auditable zigbuild --release --locked -p \S+", text), "the binary is not built auditable"
    static = (ROOT / "scripts" / "static.sh").read_text()
    assert "cargo auditable zigbuild" in static and "--audit-data" in static, \
        "scripts/static.sh does not build and check what the image ships"
    build = [s for j in workflow("release.yaml")["jobs"].values() for s in uses(j, "docker/build-push-action")]
    assert build and all(s["with"].get("sbom") is True for s in build), "the image carries no SBOM"


@test
def test_cargo_deny_checks_all_four_in_ci_and_three_offline_locally():
    config = tomllib.loads((ROOT / "deny.toml").read_text())
    for section in ("advisories", "licenses", "bans", "sources"):
        assert section in config, f"deny.toml has no [{section}]"
    assert config["sources"]["unknown-registry"] == "deny" and config["sources"]["unknown-git"] == "deny"
    assert config["licenses"]["allow"], "no license allowed"
    tools_pin("DENY_VERSION")
    ci = [r for j in workflow("ci.yaml")["jobs"].values() for r in step_runs(j) if "cargo deny" in r]
    assert any(re.search(r"cargo deny (--\S+ )*check\s*$", line) for r in ci for line in r.splitlines()), \
        "ci.yaml does not run every cargo deny check (advisories included)"
    assert any("DENY_VERSION" in r for r in ci), "ci.yaml's cargo-deny is not scripts/tools.sh's version"
    lint = (ROOT / "scripts" / "lint.sh").read_text()
    assert re.search(r"cargo deny .*check .*licenses bans sources", lint), "make lint does not run cargo deny"


# --- documentation ---------------------------------------------------------------------------


@test
def test_every_setting_the_release_reads_is_documented():
    docs = DOCS.read_text()
    names = set()
    for wf in workflows().values():
        for expr in expressions(wf):
            names |= {n for n in re.findall(r"\b(?:vars|secrets)\.(\w+)", expr) if n != "GITHUB_TOKEN"}
    assert names, "no settings found"
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert not missing, f"docs/deployment.md does not document {missing}"


# --- --audit-data ----------------------------------------------------------------------------


def elf_section(path, wanted):
    """The bytes of section `wanted` of a 64-bit little-endian ELF file (both image targets)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_offset, _ = header(shstrndx)
    for i in range(shnum):
        name, offset, size = header(i)
        end = data.index(b"\0", str_offset + name)
        if data[str_offset + name:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def audit_data(binary):
    raw = elf_section(binary, ".dep-v0")
    if raw is None:
        print(f"{binary}: no .dep-v0 section (not built with cargo auditable)")
        return 1
    packages = json.loads(zlib.decompress(raw))["packages"]
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())["package"]
    locked = {(p["name"], p["version"]) for p in lock}
    roots = [p for p in packages if p.get("root")]
    problems = []
    if [p["name"] for p in roots] != [SERVICE]:
        problems.append(f"root package is {[p['name'] for p in roots]}, not {SERVICE}")
    for p in packages:
        if (p["name"], p["version"]) not in locked:
            problems.append(f"{p['name']} {p['version']} is not in Cargo.lock")
    runtime = [p for p in packages if p.get("kind", "runtime") == "runtime" and not p.get("root")]
    for crate in ("tokio", "axum", "hyper"):
        if not any(p["name"] == crate for p in runtime):
            problems.append(f"{crate} missing")
    for problem in problems:
        print(f"{binary}: {problem}")
    print(f"{binary}: .dep-v0 lists {len(runtime)} runtime crates and {SERVICE} itself")
    return 1 if problems else 0


# --- runner ----------------------------------------------------------------------------------


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--audit-data":
        return audit_data(sys.argv[2])
    passed = failed = 0
    for fn in TESTS:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"FAIL {fn.__name__}: {type(exc).__name__}: {exc} (line {where.lineno})")
        else:
            passed += 1
            print(f"ok   {fn.__name__}")
    print(f"RESULT passed={passed} failed={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
