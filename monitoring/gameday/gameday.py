#!/usr/bin/env python3
"""The game day: every failure a user of the compose stack will meet, injected for real, and the
proof that the right alert reaches a person in time. scripts/gameday.sh (`make gameday`) runs it.

    gameday.py --binary target/release/SERVICE [--workdir DIR] [--stacks a,b] [--deadline 780]

Starts one stack per group of scenarios (scenarios.py), side by side, each with
`unshare --mount --net --pid --fork --mount-proc --kill-child=SIGTERM` running stack.py as PID 1
of its namespaces: the stack's processes end with it whatever happens. Prints their progress,
then the table (scenario, expected, delivered, time to fire, time to resolve), writes it to
DIR/run-*/results.{json,md} (DIR/latest points at the last run), and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from scenarios import SCENARIOS, STACKS, WARMUP_SECONDS, STACK_WARMUP_SECONDS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOOLS = ["unshare", "mount", "ip", "dig", "dnsmasq", "nginx", "prometheus", "prometheus-alertmanager",
         "prometheus-blackbox-exporter"]
GRACE_SECONDS = 45  # after a stack's deadline: SIGTERM, then SIGKILL this much later
KEEP_RUNS = 3       # older run-* folders of the work dir are deleted (about 25 MB each)


def unreachable_by_image_users(binary: Path) -> list[str]:
    """What the images' users (nobody; the service image's 65532) cannot read or run."""
    sys.path.insert(0, str(HERE))
    from components import image_user_and_env  # noqa: PLC0415 (needs the path above)
    checks = [("-x", binary)] + [("-r", ROOT / p) for p in (
        "monitoring/prometheus/prometheus.yml", "monitoring/alertmanager/alertmanager.yml",
        "monitoring/blackbox/blackbox.yml", "monitoring/alert-receiver/receiver.py")]
    users = {(65534, 65534), image_user_and_env()[0] or (65534, 65534)}
    out = []
    for uid, gid in sorted(users):
        for flag, path in checks:
            ok = subprocess.run(["/usr/bin/test", flag, str(path)], user=uid, group=gid, extra_groups=[]).returncode == 0
            if not ok:
                out.append(f"{path} (uid {uid})")
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when gameday.py dies, even by SIGKILL (then unshare's
    --kill-child stops the stack)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class StackProcess:
    def __init__(self, name: str, run_dir: Path, args: argparse.Namespace, outer_ns: str):
        self.name = name
        self.dir = run_dir / name
        self.dir.mkdir(parents=True)
        argv = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM",
                sys.executable, "-u", str(HERE / "stack.py"), name, "--workdir", str(self.dir),
                "--binary", args.binary, "--deadline", str(args.deadline), "--outer-ns", outer_ns]
        argv += [f"--override={o}" for o in args.override]
        argv += ["--as-root"] if args.as_root else []
        self.log = open(self.dir / "stack.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=HERE,
                                     preexec_fn=die_with_parent)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.log.write(line)
            self.log.flush()
            sys.stdout.write(f"{self.name:>9} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def terminate(self) -> None:
        """SIGTERM to stack.py (PID 1 of its namespace: it stops its processes and writes its
        result). unshare --fork ignores SIGTERM itself while it waits for its child."""
        if self.proc.poll() is not None:
            return
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            os.kill(int(children[0]), signal.SIGTERM)
        else:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to unshare: --kill-child sends its child SIGTERM, and when that PID 1 exits
        the kernel kills whatever is left in its PID namespace."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def result(self) -> dict:
        path = self.dir / "result.json"
        if path.exists():
            return json.loads(path.read_text())
        return {"stack": self.name, "error": f"no result (exit {self.proc.returncode})", "setup": [], "rows": []}


# ------------------------------------------------------------------------------- the table
def fmt_expected(exp: list[dict]) -> str:
    if not exp:
        return "nothing"
    out = []
    for e in exp:
        where = {"receiver": "", "alertmanager": " (in AM)", "prometheus": " (in Prom)"}[e["seen_in"]]
        out.append(f"{e['alert']} {e['severity']}{where} <={e['fire_within']}s")
    return "; ".join(out)


def fmt_times(measured: list[dict], key: str) -> str:
    parts = [f"{m['alert']} {m[key]:.0f}s" for m in measured if m.get(key) is not None]
    return "; ".join(parts) or "-"


def merge_rows(results: list[dict]) -> list[dict]:
    """Rows in table order: setup, the DNS self-check, steady state (all stacks), the scenarios,
    recovery (all stacks)."""
    setup_fail = [f"{r['stack']}: {c['check']}: {c['detail'][:200]}" for r in results for c in r["setup"] if not c["ok"]]
    errors = [f"{r['stack']}: {r['error']}" for r in results if r.get("error")]
    setup = {"scenario": "stacks start as compose runs them", "stack": "all", "fault": "",
             "expect_text": "the repository's files unchanged, DNS like Docker's, every target up",
             "expected": [], "measured": [], "delivered": [], "notes": [],
             "failures": setup_fail + errors, "passed": not setup_fail and not errors,
             "checks": sum(len(r["setup"]) for r in results)}
    by_name: dict[str, list[dict]] = {}
    for r in results:
        for row in r["rows"]:
            by_name.setdefault(row["scenario"], []).append(row)

    def combined(name: str) -> dict | None:
        rows = by_name.get(name)
        if not rows:
            return None
        return {"scenario": name, "stack": ",".join(x["stack"] for x in rows), "fault": rows[0]["fault"],
                "expect_text": rows[0].get("expect_text", ""),
                "expected": [], "measured": [m for x in rows for m in x["measured"]],
                "delivered": [f"{x['stack']}: {d}" for x in rows for d in x["delivered"]],
                "notes": [f"{x['stack']}: {n}" for x in rows for n in x["notes"]],
                "failures": [f"{x['stack']}: {f}" for x in rows for f in x["failures"]],
                "passed": all(x["passed"] for x in rows),
                "users": {x["stack"]: x.get("users") for x in rows}}

    out = [setup]
    if "DNS discovery self-check" in by_name:
        out += by_name["DNS discovery self-check"]
    if (row := combined("steady state")) is not None:
        out.append(row)
    for sc in SCENARIOS:
        rows = by_name.get(sc.name)
        if rows:
            out += rows
        elif any(r["stack"] == sc.stack for r in results):
            out.append({"scenario": sc.name, "stack": sc.stack, "fault": sc.fault, "expected": [],
                        "measured": [], "delivered": [], "notes": [], "passed": False,
                        "failures": ["did not run (the stack stopped before it)"]})
    if (row := combined("recovery")) is not None:
        out.append(row)
    return out


def table(rows: list[dict], markdown: bool) -> str:
    head = ["scenario", "expected (promise)", "delivered", "time to fire", "time to resolve", "result"]
    lines = []
    for r in rows:
        cells = [r["scenario"], r.get("expect_text") or fmt_expected(r.get("expected", [])),
                 "; ".join(r.get("delivered", [])) or "none",
                 fmt_times(r.get("measured", []), "fire_s"), fmt_times(r.get("measured", []), "resolve_s"),
                 "pass" if r["passed"] else "FAIL"]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in lines]
        return "\n".join(out)
    out = []
    for cells in lines:
        out.append(f"{cells[5]:4}  {cells[0]}")
        out.append(f"      expected:  {cells[1]}")
        out.append(f"      delivered: {cells[2]}")
        out.append(f"      fire: {cells[3]}   resolve: {cells[4]}")
    return "\n".join(out)


def details(rows: list[dict]) -> str:
    out = []
    for r in rows:
        for f in r.get("failures", []):
            out.append(f"  FAIL {r['scenario']}: {f}")
        for n in r.get("notes", []):
            out.append(f"  note {r['scenario']}: {n}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the service's release binary")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    parser.add_argument("--workdir", type=Path, default=target / "gameday")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"a subset of {','.join(STACKS)}")
    parser.add_argument("--deadline", type=float, default=780, help="seconds each stack may run")
    parser.add_argument("--override", action="append", default=[], help="DEVELOPMENT ONLY, see stack.py")
    args = parser.parse_args()
    args.binary = str(Path(args.binary).resolve())
    args.as_root = False
    stacks = [s for s in args.stacks.split(",") if s]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks {sorted(unknown)}; known: {', '.join(STACKS)}")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (scripts/gameday.sh installs them)")
    if os.geteuid() != 0:
        sys.exit("the game day needs root: it creates namespaces and bind-mounts /etc/resolv.conf in them")
    workdir = args.workdir.resolve()
    if workdir == Path("/tmp"):
        sys.exit("--workdir must not be /tmp itself: each stack mounts a private /tmp")
    run_dir = workdir / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    for old in sorted(workdir.glob("run-*"))[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    # A copy of the binary: a rebuild during the run must not change what a restart runs.
    (run_dir / "bin").mkdir()
    binary = run_dir / "bin" / Path(args.binary).name
    shutil.copy2(args.binary, binary)
    binary.chmod(0o755)
    args.binary = str(binary)
    # The services run as their images' users (not root): they must reach the repository's files
    # and the run. Where they cannot (a clone under /root), everything runs as root, noted.
    unreachable = unreachable_by_image_users(binary)
    if unreachable:
        args.as_root = True
        log(f"NOTE: running every service as root: not reachable by the images' users: {'; '.join(unreachable)}")
    latest = workdir / "latest"
    if latest.is_symlink():
        latest.unlink()
    latest.symlink_to(run_dir.name)
    outer_ns = f"{os.readlink('/proc/self/ns/mnt')},{os.readlink('/proc/self/ns/net')}"

    log(f"game day: {len(stacks)} stacks side by side ({', '.join(stacks)}), warm-up {WARMUP_SECONDS}s "
        f"({', '.join(f'{k} {v}s' for k, v in STACK_WARMUP_SECONDS.items())}), "
        f"at most {args.deadline:.0f}s each; logs in {run_dir}")
    started = time.monotonic()
    procs: list[StackProcess] = []

    def stop_all(signum=None, _frame=None):
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + GRACE_SECONDS
        for p in procs:
            try:
                p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.proc.wait(10)
        if signum is not None:
            sys.exit(f"game day interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    try:
        for name in stacks:
            procs.append(StackProcess(name, run_dir, args, outer_ns))
        hard_deadline = started + args.deadline + GRACE_SECONDS
        for p in procs:
            try:
                p.proc.wait(max(0.1, hard_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"stack {p.name} overran its deadline: stopping it")
                p.terminate()
        stop_all()
        for p in procs:
            p.reader.join(5)
    except BaseException:
        stop_all()
        raise

    results = [p.result() for p in procs]
    rows = merge_rows(results)
    elapsed = time.monotonic() - started
    passed = sum(1 for r in rows if r["passed"])
    failed = len(rows) - passed
    report = {"seconds": round(elapsed, 1), "stacks": stacks, "as_root": args.as_root, "rows": rows,
              "results": results,
              "passed": passed, "failed": failed}
    (run_dir / "results.json").write_text(json.dumps(report, indent=1))
    md = (f"# Game day, {time.strftime('%Y-%m-%d %H:%M')}\n\n{len(stacks)} stacks side by side, "
          f"{elapsed / 60:.1f} minutes.\n\n{table(rows, markdown=True)}\n\n## Notes\n\n"
          + "\n".join(f"- {line.strip()}" for line in details(rows).splitlines()) + "\n")
    (run_dir / "results.md").write_text(md)
    print()
    print(table(rows, markdown=False))
    print()
    print(details(rows))
    print(f"\nwall time {elapsed / 60:.1f} min; results: {run_dir}/results.md, results.json")
    print(f"gameday: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
