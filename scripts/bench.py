#!/usr/bin/env python3
"""`make bench`: paired load benchmark of the release build, reported as ratios.

Every figure is measured in one run against baselines built by the same toolchain, so the
ratios hold across machines even when absolute numbers do not:

  full        the shipped binary (all layers, metrics, JSON request logs at info), traces off
  traces      the same binary exporting every request's span over OTLP to a sink on 127.0.0.1
  no-metrics  the same server without the axum-prometheus layer
  bare        the routes with no layers at all
  rev         with --baseline-rev REV: the shipped binary built from git revision REV, e.g. to
              show what a change costs (the commit before traces existed: traces off is free)
  nginx       the peer of the performance goal: nginx (one worker process, CPU 0) answering the
              same two routes with fixed JSON and one JSON access-log line per request, with the
              fields of the service's request log, to the same sink (stdout, discarded)

Servers run pinned to CPU 0 (so tokio sizes itself to one worker, like a 1-CPU container) and
wrk to CPU 1. Variants are interleaved round by round and the median of the rounds is kept.
The metrics layer is also measured in ABBA cycles against no-metrics on servers kept running,
and both ratio goals are judged by callgrind's instruction counts (see GOALS); full against the
bare router and against nginx, and traces against full, are paired the same way, and those
three goals are judged by their pairs, with the round medians reported beside them.
Results are printed and saved to bench/results/latest.{json,md}.
"""

import argparse
import http.client
import http.server
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WRK_SCRIPT = ROOT / "bench" / "wrk-report.lua"
STATIC_TARGET = "x86_64-unknown-linux-musl"  # the image's binary, whose size is a goal
MiB = 1024 * 1024

# key: (op, limit, label, basis). The metrics-layer and /info ratios are judged by user-space
# instructions when callgrind ran (else by capacity): CPU time per request moves ±20% between runs
# on a shared VM, the count does not, and the kernel's work is the same in both variants (the
# paired CPU figure checks that the count hides no cost). Ratios against another server (nginx,
# the bare router) or across very different work (traces) are judged by capacity, kernel
# included, measured paired when the pair ran (else by the round medians): ABBA cycles on servers
# side by side cancel the VM's drift, which moved the medians by up to 30% (docs/performance.md).
GOALS = {
    "metrics_layer": (">=", 0.95, "metrics layer: full / no-metrics on /health", "instructions"),
    "info_vs_health": (">=", 0.95, "/info / /health", "instructions"),
    "full_vs_nginx": (">=", 1.0, "full / nginx with a JSON access log, /health", "paired"),
    "full_vs_bare": (">=", 0.75, "full stack / bare router, /health", "paired"),
    "traces_on": (">=", 0.5, "traces on (every request) / off, /health", "paired"),
    "peak_rss_64_conns_mib": ("<=", 8.0, "peak RSS under 64 connections, no variable set", None),
    "rss_after_10k_unknown_mib": ("<=", 16.0, "RSS after 10k unknown paths", None),
    "first_healthy_ms": ("<=", 10.0, "first healthy response after start", None),
    "static_binary_mb": ("<=", 5.0, "static binary size", None),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskset(cpu):
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []


class Server:
    """A server process on loopback ports, pinned to CPU 0, stdout discarded."""

    log_level = "info"

    def __init__(self, argv, extra_env=None):
        self.port, self.metrics_port = free_port(), free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "APP__SERVER__HOST": "127.0.0.1",
            "APP__SERVER__PORT": str(self.port),
            "APP__METRICS__HOST": "127.0.0.1",
            "APP__METRICS__PORT": str(self.metrics_port),
            "APP__SHUTDOWN__DRAIN_DELAY": "0s",
            "APP__LOG__LEVEL": self.log_level,
            # No MIMALLOC_* variable: the build chooses the allocator's options (.cargo/config.toml).
            **(extra_env or {}),
        }
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            taskset(0) + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def first_healthy_ms(self, limit_s=10.0):
        """Milliseconds from spawn to the first 200 from /api/v1/health."""
        request = b"GET /api/v1/health HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
        while time.perf_counter() - self.started < limit_s:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(request)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return (time.perf_counter() - self.started) * 1000
            except OSError:
                time.sleep(0.0002)
        raise SystemExit(f"server never became healthy: {self.proc.stderr.read().decode()}")

    def cpu_seconds(self):
        """User + system CPU time of the whole process (all threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self, field):
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)
        return int(kib) * 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# The access log line carries the fields of the service's request log line (timestamp, level,
# message, status, latency, target, method, path, request id, route), JSON-escaped; the request id
# is generated and echoed like the service's `x-request-id`.
NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {prefix}/error.log warn;
pid {prefix}/nginx-{port}.pid;
events {{ worker_connections 4096; }}
http {{
  log_format request escape=json '{{"timestamp":"$time_iso8601","level":"INFO",'
    '"message":"request completed","status":$status,"latency_ms":$request_time,'
    '"target":"http","span":{{"method":"$request_method","path":"$uri",'
    '"request_id":"$request_id","route":"$uri","name":"request"}}}}';
  access_log /dev/stdout request;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    add_header x-request-id $request_id always;
    location = /api/v1/health {{ return 200 '{{"success":true}}'; }}
    location = /api/v1/info {{ return 200 '{info}'; }}
  }}
}}
"""
INFO_BODY = ('{"name":"Linux","release":"6.1.0-18-amd64","totalMem":25217441792,"freeMem":23851372544,'
             '"hostname":"web-1","arch":"x86_64","cpus":2,"uptime":5211,"version":"0.1.0"}')


class NginxServer(Server):
    """nginx as the `nginx` variant: same ports, pinning, stdout sink and measurements."""

    def __init__(self, prefix):
        self.port, self.metrics_port = free_port(), free_port()
        conf = Path(prefix) / f"nginx-{self.port}.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=self.port, info=INFO_BODY))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            taskset(0) + ["nginx", "-p", str(prefix), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )


def start(variant):
    """A server of `variant`: (argv, extra environment), or a factory (nginx)."""
    return variant() if callable(variant) else Server(*variant)


def wrk(url, seconds, connections, server=None):
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(
        taskset(1) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                      "-s", str(WRK_SCRIPT), url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    m = re.search(r"WRK_RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+)", out)
    if not m:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    requests, duration, p50, p99, errors = map(int, m.groups())
    cpu = (server.cpu_seconds() - cpu_before) if server else 0.0
    return {"rps": requests / (duration / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
            "errors": errors, "cpu_us": cpu / max(requests, 1) * 1e6}


def paired_ratio(base, other, path, cycles, connections):
    """Mean and standard error of base / other CPU per request (other's capacity relative to
    base's) over ABBA cycles of 2 s runs on two servers kept running side by side: each pair
    sees the same minute of the VM's drift, which the round medians above do not cancel."""
    servers = [start(base), start(other)]
    try:
        for server in servers:
            server.first_healthy_ms()
            wrk(server.url(path), 2, connections)  # warm-up
        ratios = []
        for cycle in range(cycles):
            order = servers + servers[::-1] if cycle % 2 == 0 else servers[::-1] + servers
            cpu = {id(s): [] for s in servers}
            for server in order:
                cpu[id(server)].append(wrk(server.url(path), 2, connections, server)["cpu_us"])
            ratios.append(statistics.mean(cpu[id(servers[0])]) / statistics.mean(cpu[id(servers[1])]))
        return statistics.mean(ratios), statistics.stdev(ratios) / len(ratios) ** 0.5
    finally:
        for server in servers:
            server.stop()


def unknown_paths(server, count):
    """`count` distinct unknown paths over one keep-alive connection (bounded)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    deadline = time.monotonic() + 120
    for i in range(count):
        conn.request("GET", f"/unknown/{i}/{i * 7919 % 104729}")
        response = conn.getresponse()
        response.read()
        assert response.status == 404, response.status
        assert time.monotonic() < deadline, "bounded loop ran out of time"
    conn.close()


class OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them: the `traces` variant pays for producing and
    sending spans, not for a collector."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_otlp_sink():
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{sink.server_address[1]}"


def instructions_per_request(argv, env, path, count):
    """User-space instructions per request under callgrind: deterministic, so a few-percent
    difference is visible on a noisy machine (kernel time, ~half of the CPU, is not counted)."""
    out = RESULTS / f"callgrind.{os.getpid()}.out"
    server = Server(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv, env)
    server.first_healthy_ms(limit_s=60)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def requests(n):
        for _ in range(n):
            conn.request("GET", path)
            conn.getresponse().read()

    requests(300)  # warm-up; each dump holds what ran since the previous one
    subprocess.run(["callgrind_control", "--dump=warm", str(server.proc.pid)], check=True, capture_output=True)
    requests(count)
    subprocess.run(["callgrind_control", "--dump=measured", str(server.proc.pid)], check=True, capture_output=True)
    conn.close()
    server.stop()
    dump = Path(f"{out}.2")
    total = int(re.search(r"^summary: (\d+)", dump.read_text(), re.M).group(1))
    for f in RESULTS.glob(f"callgrind.{os.getpid()}.out*"):
        f.unlink()
    return total / count


def build(target, source=ROOT, examples=True, target_dir=ROOT / "target"):
    # musl targets are built the way the image builds them: cargo-zigbuild (mimalloc is C).
    tool = "zigbuild" if target and target.endswith("-musl") else "build"
    # The package is named in app/Cargo.toml (a --baseline-rev tree may predate a rename).
    name = tomllib.loads((Path(source) / "app" / "Cargo.toml").read_text())["package"]["name"]
    cargo = ["cargo", tool, "--locked", "--release", "-p", name, "--bins"]
    if examples:
        cargo += ["--example", "bench_server"]
    if target:
        cargo += ["--target", target]
    subprocess.run(cargo, cwd=source, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(target_dir)})
    out = target_dir / (target or "") / "release"
    return out / name, out / "examples" / "bench_server"


def build_revision(target, rev, workdir):
    """The shipped binary of git revision `rev`, built in a detached worktree under `workdir`
    with a target directory of its own (kept, so dependencies are compiled once)."""
    tree = Path(workdir) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True)
    try:
        backend, _ = build(target, tree, examples=False, target_dir=ROOT / "target" / "bench-rev")
        kept = Path(workdir) / "backend"
        kept.write_bytes(backend.read_bytes())
        kept.chmod(0o755)
        return kept
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=STATIC_TARGET,
                        help="rust target to build and measure (default: the static image binary)")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per variant")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--no-callgrind", action="store_true",
                        help="skip the deterministic instruction counts (needs valgrind)")
    parser.add_argument("--log-level", default="info",
                        help="APP__LOG__LEVEL of every variant (info: one JSON line per request)")
    parser.add_argument("--paired-cycles", type=int, default=20,
                        help="ABBA cycles of full against no-metrics on /health (below 2: skip)")
    parser.add_argument("--paired-peer-cycles", type=int, default=10,
                        help="ABBA cycles of full against bare and against nginx, and of traces "
                             "against full, on /health, which judge those goals (below 2: skip, "
                             "and judge them by the round medians)")
    parser.add_argument("--baseline-rev", metavar="REV",
                        help="also measure the shipped binary built from this git revision")
    args = parser.parse_args()

    Server.log_level = args.log_level
    backend, bench_server = build(args.target)
    static = backend if args.target == STATIC_TARGET else build(STATIC_TARGET, examples=False)[0]
    # name -> (argv, extra environment)
    variants = {
        "full": ([str(backend)], {}),
        "traces": ([str(backend)], {"APP__TRACING__OTLP_ENDPOINT": start_otlp_sink()}),
        "no-metrics": ([str(bench_server), "no-metrics"], {}),
        "bare": ([str(bench_server), "bare"], {}),
    }
    scratch = tempfile.TemporaryDirectory(prefix="bench-rev-")
    nginx_prefix = Path(scratch.name) / "nginx"
    nginx_prefix.mkdir()
    variants["nginx"] = lambda: NginxServer(nginx_prefix)
    if args.baseline_rev:
        variants["rev"] = ([str(build_revision(args.target, args.baseline_rev, scratch.name))], {})
    paths = ["/api/v1/health", "/api/v1/info"]
    runs = {(v, p): [] for v in variants for p in paths}
    peak_rss = {}

    for round_ in range(args.rounds):
        for name, variant in variants.items():
            server = start(variant)
            server.first_healthy_ms()
            # Alternate which path goes first: the first run on a fresh server reads slower.
            for path in paths if round_ % 2 == 0 else reversed(paths):
                wrk(server.url(path), 2, args.connections)  # warm-up
                result = wrk(server.url(path), args.seconds, args.connections, server)
                runs[(name, path)].append(result)
                print(f"round {round_ + 1} {name:<10} {path:<15} {result['rps']:>9.0f} rps  "
                      f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                      f"cpu {result['cpu_us']:.2f} us/req  "
                      f"errors {result['errors']}", flush=True)
            peak_rss[name] = max(peak_rss.get(name, 0), server.status("VmHWM"))
            server.stop()

    def median(name, path, key="rps"):
        return statistics.median(r[key] for r in runs[(name, path)])

    instructions = {}
    if not args.no_callgrind:
        for name, variant in variants.items():
            if callable(variant):
                continue  # nginx: compared by capacity only
            argv, env = variant
            for path in paths:
                instructions[(name, path)] = instructions_per_request(argv, env, path, 2000)
                print(f"callgrind {name:<10} {path:<15} {instructions[(name, path)]:>9.0f} instructions/request",
                      flush=True)

    # full against each baseline, and traces against full, in ABBA cycles on servers kept side
    # by side. The metrics layer's pair checks its instruction count; the others judge the goals
    # against the bare router and nginx and for traces (see GOALS).
    pairs = {}
    for base, other, cycles in (("no-metrics", "full", args.paired_cycles),
                                ("bare", "full", args.paired_peer_cycles),
                                ("nginx", "full", args.paired_peer_cycles),
                                ("full", "traces", args.paired_peer_cycles)):
        if cycles > 1:
            pair = paired_ratio(variants[base], variants[other], "/api/v1/health", cycles,
                                args.connections)
            pairs[other if base == "full" else base] = pair
            print(f"paired {other} / {base} capacity on /health: {pair[0]:.3f} ± {pair[1]:.3f}",
                  flush=True)
    paired = pairs.pop("no-metrics", None)
    traces_paired = pairs.pop("traces", None)
    peers = pairs

    starts = []
    for _ in range(5):
        server = Server(*variants["full"])
        starts.append(server.first_healthy_ms())
        server.stop()

    server = Server(*variants["full"])
    server.first_healthy_ms()
    unknown_paths(server, 10_000)
    metrics_size = len(urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read())
    rss_after_unknown = server.status("VmRSS")
    server.stop()

    def capacity(name, path):
        """Requests per CPU-second: throughput with steal time and neighbours taken out."""
        return 1e6 / median(name, path, "cpu_us")

    figures = {
        "metrics_layer_capacity_ratio": capacity("full", "/api/v1/health") / capacity("no-metrics", "/api/v1/health"),
        "metrics_layer_info_capacity_ratio": capacity("full", "/api/v1/info") / capacity("no-metrics", "/api/v1/info"),
        "full_vs_nginx_capacity_ratio": capacity("full", "/api/v1/health") / capacity("nginx", "/api/v1/health"),
        "full_vs_nginx_info_capacity_ratio": capacity("full", "/api/v1/info") / capacity("nginx", "/api/v1/info"),
        "full_vs_bare_capacity_ratio": capacity("full", "/api/v1/health") / capacity("bare", "/api/v1/health"),
        "traces_on_capacity_ratio": capacity("traces", "/api/v1/health") / capacity("full", "/api/v1/health"),
        **({"full_vs_rev_ratio": capacity("full", "/api/v1/health") / capacity("rev", "/api/v1/health")}
           if "rev" in variants else {}),
        "info_vs_health_capacity_ratio": capacity("full", "/api/v1/info") / capacity("full", "/api/v1/health"),
        "metrics_layer_rps_ratio": median("full", "/api/v1/health") / median("no-metrics", "/api/v1/health"),
        "info_vs_health_rps_ratio": median("full", "/api/v1/info") / median("full", "/api/v1/health"),
        **({"metrics_layer_paired_ratio": paired[0], "metrics_layer_paired_stderr": paired[1]} if paired else {}),
        **{f"full_vs_{peer}_paired_{k}": v for peer, (mean, stderr) in peers.items()
           for k, v in (("ratio", mean), ("stderr", stderr))},
        **({"traces_on_paired_ratio": traces_paired[0], "traces_on_paired_stderr": traces_paired[1]}
           if traces_paired else {}),
        "peak_rss_64_conns_mib": peak_rss["full"] / MiB,
        "rss_after_10k_unknown_mib": rss_after_unknown / MiB,
        "metrics_bytes_after_10k_unknown": metrics_size,
        "first_healthy_ms": statistics.median(starts),
        "static_binary_mb": static.stat().st_size / 1e6,
    }
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": args.target, "seconds": args.seconds, "rounds": args.rounds,
        "log_level": args.log_level, "baseline_rev": args.baseline_rev,
        "connections": args.connections, "cpus": os.cpu_count(),
        "medians": {f"{v} {p}": {k: median(v, p, k) for k in ("rps", "cpu_us", "p50_ms", "p99_ms")}
                    for v in variants for p in paths},
        "peak_rss_mib": {k: v / MiB for k, v in peak_rss.items()},
        "instructions_per_request": {f"{v} {p}": n for (v, p), n in instructions.items()},
        "figures": figures,
        "goals": {},
    }
    table = ["| variant, path | rps | CPU µs/request | p50 ms | p99 ms |", "|---|---|---|---|---|"] + [
        f"| {k} | {v['rps']:.0f} | {v['cpu_us']:.2f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |"
        for k, v in report["medians"].items()]
    if instructions:
        ir = lambda v, p: instructions[(v, p)]
        table += ["", "| variant, path | user-space instructions/request (callgrind) |", "|---|---|"] + [
            f"| {v} {p} | {n:,.0f} |" for (v, p), n in instructions.items()]
        figures["metrics_layer_instructions_ratio"] = ir("no-metrics", "/api/v1/health") / ir("full", "/api/v1/health")
        figures["info_vs_health_instructions_ratio"] = ir("full", "/api/v1/health") / ir("full", "/api/v1/info")
        figures["traces_on_instructions_ratio"] = ir("full", "/api/v1/health") / ir("traces", "/api/v1/health")
        if "rev" in variants:
            figures["full_vs_rev_instructions_ratio"] = ir("rev", "/api/v1/health") / ir("full", "/api/v1/health")
    missed = 0
    lines = ["| goal | measured | target | |", "|---|---|---|---|"]
    for key, (op, limit, label, basis) in GOALS.items():
        if basis in ("instructions", "paired") and f"{key}_{basis}_ratio" not in figures:
            basis = "capacity"  # --no-callgrind, or fewer than 2 paired cycles
        value = figures[f"{key}_{basis}_ratio" if basis else key]
        label += f" ({'capacity, paired' if basis == 'paired' else basis})" if basis else ""
        ok = value >= limit if op == ">=" else value <= limit
        missed += not ok
        report["goals"][key] = {"value": value, "op": op, "limit": limit, "ok": ok, "basis": basis}
        lines.append(f"| {label} | {value:.3f} | {op} {limit} | {'ok' if ok else 'MISSED'} |")
    extra = [f"- capacity = requests per CPU-second of the server (1 / median CPU µs per request)",
             f"- by capacity: metrics layer {figures['metrics_layer_capacity_ratio']:.3f} "
             f"(on /info {figures['metrics_layer_info_capacity_ratio']:.3f}), "
             f"/info vs /health {figures['info_vs_health_capacity_ratio']:.3f}",
             *([f"- metrics layer by paired CPU ({args.paired_cycles} ABBA cycles, servers side by side): "
                f"{paired[0]:.3f} ± {paired[1]:.3f} (standard error)"] if paired else []),
             f"- by raw rps instead: metrics layer {figures['metrics_layer_rps_ratio']:.3f}, "
             f"/info vs /health {figures['info_vs_health_rps_ratio']:.3f}",
             f"- full / nginx capacity: /health {figures['full_vs_nginx_capacity_ratio']:.3f}, "
             f"/info {figures['full_vs_nginx_info_capacity_ratio']:.3f}",
             f"- full / bare capacity on /health: {figures['full_vs_bare_capacity_ratio']:.3f}",
             *[f"- full / {peer} by paired CPU ({args.paired_peer_cycles} ABBA cycles, servers side by side): "
               f"{mean:.3f} ± {stderr:.3f} (standard error)" for peer, (mean, stderr) in peers.items()],
             f"- traces on / off (full) capacity on /health: {figures['traces_on_capacity_ratio']:.3f}"
             + (f", by instructions {figures['traces_on_instructions_ratio']:.3f}" if instructions else ""),
             *([f"- traces on / off by paired CPU ({args.paired_peer_cycles} ABBA cycles, servers side by side): "
                f"{traces_paired[0]:.3f} ± {traces_paired[1]:.3f} (standard error)"] if traces_paired else []),
             *([f"- full / rev {args.baseline_rev} capacity on /health: {figures['full_vs_rev_ratio']:.3f}"
                + (f", by instructions {figures['full_vs_rev_instructions_ratio']:.3f}" if instructions else "")]
               if args.baseline_rev else []),
             f"- /metrics after 10k unknown paths: {metrics_size} bytes",
             f"- peak RSS per variant (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in report['peak_rss_mib'].items())]
    markdown = "\n".join([f"Measured {report['when']} ({args.target}, {args.rounds} rounds x {args.seconds} s, "
                          f"{args.connections} connections, {os.cpu_count()} CPUs, log level {args.log_level})", "", *table, "", *lines, "", *extra, ""])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    print("\n" + markdown)
    if missed and args.strict:
        sys.exit(1)


if __name__ == "__main__":
    main()
