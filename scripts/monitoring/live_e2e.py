#!/usr/bin/env python3
"""Live end-to-end test: the real backend, Prometheus and Alertmanager on 127.0.0.1.

    live_e2e.py --binary BIN --prometheus BIN --alertmanager BIN --workdir DIR

1. Starts a webhook sink, two backend replicas, Alertmanager and Prometheus on free ports. Prometheus runs
   the repository's rule files with a configuration derived from monitoring/prometheus/prometheus.yml
   (same intervals and jobs; the DNS discovery of `backend` becomes the replicas' 127.0.0.1 targets),
   Alertmanager the repository's routing with the webhook URLs pointed at the sink.
2. Sends bounded traffic (every route, 404s, 405s) and checks the metrics contract on /metrics.
3. Waits until both replicas are `up == 1` and EVERY recording rule and EVERY dashboard query (and variable) returns
   data, with the template variables set to "All" and to one concrete instance and route.
4. Checks that Alertmanager inhibits a ticket while a page of the same service fires.
5. Stops one replica and measures how long BackendDown takes to reach Alertmanager (promise: 2
   minutes) and then the `page` receiver; the replica still running must not be reported.

Every process it starts is stopped again by PID; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from common import (
    ALERT_PREFIX,
    ALERTMANAGER_FILE,
    JOB,
    PROMETHEUS_FILE,
    PROMETHEUS_SERIES,
    RULES_DIR,
    SLO_FILE,
    Checks,
    dashboard_queries,
    exposed_names,
    latency_buckets,
    load_dashboards,
    load_rules,
    metric_names,
    parse_exposition,
    substitute,
    variable_queries,
)

DOWN_ALERT = f"{ALERT_PREFIX}Down"
DOWN_PROMISE_SECONDS = 120  # BackendDown "fires within 2 minutes" (rules/alerts.yml)
DATA_DEADLINE_SECONDS = 150  # first scrape + first evaluation of the 1m-interval SLO group, with margin
TRAFFIC_MAX_REQUESTS = 20_000  # the traffic thread stops at whichever comes first
TRAFFIC_MAX_SECONDS = 200
TRAFFIC_RPS = 40

CONTRACT_METRICS = {
    "http_request_duration_seconds": "histogram",
    "http_requests_total": "counter",
    "http_requests_pending": "gauge",
    "build_info": "gauge",
    "process_cpu_seconds_total": None,
    "process_resident_memory_bytes": None,
    "process_virtual_memory_bytes": None,
    "process_open_fds": None,
    "process_max_fds": None,
    "process_start_time_seconds": None,
    "process_threads": None,
}

# (method, path): every route, HEAD, a wrong method (405) and an unknown path (404, "unmatched")
TRAFFIC = [
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/ready"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("HEAD", "/api/v1/info"),
    ("POST", "/api/v1/health"),
    ("GET", "/no/such/route"),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 3.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(url: str, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if http("GET", url, timeout=1)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {seconds}s")


class Processes:
    """The processes this test started; stopped by PID, never by name."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        log(f"started {name} (pid {proc.pid}), log {self.workdir / (name + '.log')}")
        return proc

    def stop(self, name: str, timeout: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class WebhookSink:
    """Records what Alertmanager delivers: (monotonic time, path, payload)."""

    def __init__(self, port: int):
        self.received: list[tuple[float, str, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                sink.received.append((time.monotonic(), self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Traffic(threading.Thread):
    """Bounded background load, round-robin over the replicas like the load balancer.

    Stops at TRAFFIC_MAX_REQUESTS, TRAFFIC_MAX_SECONDS or stop().
    """

    def __init__(self, bases: list[str]):
        super().__init__(daemon=True)
        self.bases = bases
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_MAX_SECONDS
        i = 0
        while not self._stop_event.is_set() and self.sent < TRAFFIC_MAX_REQUESTS and time.monotonic() < deadline:
            method, path = TRAFFIC[i % len(TRAFFIC)]
            i += 1
            try:
                base = self.bases[i % len(self.bases)]
                status = http(method, base + path, body=b"{}" if method == "POST" else None, timeout=2)[0]
            except (urllib.error.URLError, OSError):
                status = 0
            self.sent += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            time.sleep(1 / TRAFFIC_RPS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def derive_prometheus_config(targets: dict[str, list[str]], am_addr: str) -> dict:
    """monitoring/prometheus/prometheus.yml with 127.0.0.1 targets; everything else kept."""
    cfg = yaml.safe_load(PROMETHEUS_FILE.read_text())
    cfg["rule_files"] = [str(PROMETHEUS_FILE.parent / pattern) for pattern in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [am_addr]}]}]
    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            continue  # e.g. grafana: not running in this test
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets[name]}]
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg


def derive_alertmanager_config(sink_addr: str) -> dict:
    """monitoring/alertmanager/alertmanager.yml with every webhook sent to the local sink."""
    cfg = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(hook["url"]).path
            hook["url"] = f"http://{sink_addr}{path}"
    return cfg


def prom_query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = http("GET", url, timeout=10)
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise RuntimeError(f"query failed ({status}): {expr}\n{data.get('error')}")
    return data["data"]["result"]


def has_data(result: list[dict]) -> bool:
    """At least one sample that is a number (NaN alone is not data)."""
    for series in result:
        value = series.get("value", [None, "NaN"])[1]
        if not math.isnan(float(value)):
            return True
    return False


def am_alerts(base: str, alertname: str) -> list[dict]:
    url = f"{base}/api/v2/alerts?" + urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    return json.loads(http("GET", url)[2])


def check_metrics_contract(c: Checks, metrics_base: str, rules, dashboards) -> None:
    status, headers, body = http("GET", metrics_base + "/metrics")
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    c.check(status == 200, "/metrics answers 200")
    # Prometheus 3 (the compose image) refuses a scrape without a valid text content type.
    c.check(content_type.startswith("text/plain") and "version=0.0.4" in content_type,
            "/metrics has content-type text/plain; version=0.0.4", content_type)
    types, series = parse_exposition(body.decode())
    for name, kind in CONTRACT_METRICS.items():
        c.check(name in types or name in series, f"/metrics exposes {name} (docs/contract.md)")
        if kind:
            c.check(types.get(name) == kind, f"{name} is a {kind}", str(types.get(name)))
    label_sets = {
        "http_requests_total": {"method", "status", "endpoint"},
        "http_requests_pending": {"method", "endpoint"},
        "build_info": {"version", "revision"},
        "http_request_duration_seconds_bucket": {"method", "status", "endpoint", "le"},
    }
    for name, want in label_sets.items():
        got = {frozenset(labels) for labels in series.get(name, [])}
        c.check(got == {frozenset(want)}, f"{name} has exactly the labels {sorted(want)}", str(got))
    endpoints = {labels.get("endpoint") for labels in series.get("http_requests_total", [])}
    c.check("unmatched" in endpoints and "/no/such/route" not in endpoints,
            'unknown paths are labelled endpoint="unmatched"', str(endpoints))
    buckets = sorted({float(labels["le"]) for labels in series.get("http_request_duration_seconds_bucket", [])
                      if labels.get("le") != "+Inf"})
    c.check(buckets == latency_buckets(), "histogram buckets are LATENCY_BUCKETS (app/src/metrics.rs)", str(buckets))
    threshold = yaml.safe_load(SLO_FILE.read_text())["slos"]["latency"]["threshold_seconds"]
    c.check(threshold in buckets, f"the SLO threshold {threshold}s is a bucket boundary of the scraped histogram")

    exposed = exposed_names(types, series)
    recorded = {r.name for r in rules if r.kind == "record"}
    used: dict[str, set[str]] = {}
    for r in rules:
        for n in metric_names(r.expr):
            used.setdefault(n, set()).add(f"{r.file}:{r.name}")
    for fname, d in dashboards.items():
        for where, expr in dashboard_queries(d):
            for n in metric_names(expr):
                used.setdefault(n, set()).add(f"{fname} {where}")
        for var, selector, _ in variable_queries(d):
            for n in metric_names(selector):
                used.setdefault(n, set()).add(f"{fname} ${var}")
    for name, where in sorted(used.items()):
        ok = name in exposed or name in recorded or name in PROMETHEUS_SERIES
        c.check(ok, f"metric {name} (used by {len(where)} rules/panels) exists in /metrics or is recorded",
                ", ".join(sorted(where)[:3]))


def wait_for_data(c: Checks, prom: str, rules, dashboards, values_sets: list[dict[str, str]]) -> None:
    """Polls until every query has data or the deadline passes; then records one check per query."""
    queries: dict[str, str] = {
        "up == 1": f'up{{job="{JOB}"}} == 1',
        "every replica is an instance: count(up == 1) == 2": f'count(up{{job="{JOB}"}} == 1) == 2',
    }
    for r in rules:
        if r.kind == "record":
            matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(r.labels.items()))
            queries[f"recording rule {r.name}{{{matchers}}}"] = f"{r.name}{{{matchers}}}" if matchers else r.name
    for fname, d in dashboards.items():
        for values in values_sets:
            label = "All" if values["instance"] == ".*" else f"instance={values['instance']}, route={values['route']}"
            for where, expr in dashboard_queries(d):
                queries[f"{fname} {where} [{label}]"] = substitute(expr, values)
        for var, selector, _ in variable_queries(d):
            queries[f"{fname} variable ${var}"] = selector

    pending = dict(queries)
    deadline = time.monotonic() + DATA_DEADLINE_SECONDS
    last_error: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending.items()):
            try:
                if has_data(prom_query(prom, expr)):
                    del pending[name]
            except RuntimeError as e:
                last_error[name] = str(e)
        if pending:
            time.sleep(3)
    log(f"{len(queries) - len(pending)} of {len(queries)} queries returned data")
    for name, expr in queries.items():
        c.check(name not in pending, f"returns data: {name}", last_error.get(name, expr.replace("\n", " ")))


def check_inhibition(c: Checks, am: str) -> None:
    """A page inhibits a ticket of the same service, not one of another service."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts = [
        {"labels": {"alertname": "E2EPage", "severity": "page", "service": "e2e"}, "startsAt": now},
        {"labels": {"alertname": "E2ETicket", "severity": "ticket", "service": "e2e"}, "startsAt": now},
        {"labels": {"alertname": "E2EOtherTicket", "severity": "ticket", "service": "other"}, "startsAt": now},
    ]
    status = http("POST", f"{am}/api/v2/alerts", body=json.dumps(alerts).encode())[0]
    c.check(status == 200, "Alertmanager accepts alerts on /api/v2/alerts", str(status))
    deadline = time.monotonic() + 10
    ticket = other = []
    while time.monotonic() < deadline:
        ticket, other = am_alerts(am, "E2ETicket"), am_alerts(am, "E2EOtherTicket")
        if ticket and ticket[0]["status"].get("inhibitedBy"):
            break
        time.sleep(0.5)
    c.check(bool(ticket) and bool(ticket[0]["status"].get("inhibitedBy")),
            "a firing page inhibits the ticket of the same service", json.dumps(ticket)[:300])
    c.check(bool(other) and not other[0]["status"].get("inhibitedBy"),
            "a page does not inhibit the tickets of another service", json.dumps(other)[:300])


def run(args: argparse.Namespace) -> int:
    c = Checks("live end-to-end")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Processes(workdir)
    apis, metrics = [free_port(), free_port()], [free_port(), free_port()]
    prom_port, am_port, sink_port = free_port(), free_port(), free_port()
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    api_bases = [f"http://127.0.0.1:{p}" for p in apis]
    instances = [f"127.0.0.1:{p}" for p in metrics]
    sink = WebhookSink(sink_port)
    traffic = None
    rules, dashboards = load_rules(), load_dashboards()
    try:
        replicas = []
        for i, (api, metrics_port) in enumerate(zip(apis, metrics)):
            env = {
                **os.environ,
                "APP__SERVER__HOST": "127.0.0.1",
                "APP__SERVER__PORT": str(api),
                "APP__METRICS__HOST": "127.0.0.1",
                "APP__METRICS__PORT": str(metrics_port),
                "APP__SHUTDOWN__DRAIN_DELAY": "0s",
                "APP__LOG__LEVEL": "warn",
            }
            replicas.append(procs.start(f"backend-{i}", [args.binary], env=env))
        for base in api_bases:
            wait_for(base + "/api/v1/health", 10, "backend")

        am_cfg = workdir / "alertmanager.yml"
        am_cfg.write_text(yaml.safe_dump(derive_alertmanager_config(f"127.0.0.1:{sink_port}"), sort_keys=False))
        procs.start("alertmanager", [
            args.alertmanager, f"--config.file={am_cfg}", f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ])
        prom_cfg_data = derive_prometheus_config(
            {JOB: instances, "prometheus": [f"127.0.0.1:{prom_port}"],
             "alertmanager": [f"127.0.0.1:{am_port}"]},
            f"127.0.0.1:{am_port}",
        )
        prom_cfg = workdir / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump(prom_cfg_data, sort_keys=False))
        log(f"derived Prometheus config: scrape {prom_cfg_data['global']['scrape_interval']}, "
            f"evaluation {prom_cfg_data['global']['evaluation_interval']} (as in compose), {prom_cfg}")
        procs.start("prometheus", [
            args.prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ])
        wait_for(am + "/-/ready", 20, "alertmanager")
        wait_for(prom + "/-/ready", 30, "prometheus")
        rule_groups = json.loads(http("GET", prom + "/api/v1/rules")[2])["data"]["groups"]
        loaded = sum(len(g["rules"]) for g in rule_groups)
        c.check(loaded == len(rules), f"Prometheus loaded all {len(rules)} rules of {RULES_DIR.name}/", str(loaded))

        traffic = Traffic(api_bases)
        traffic.start()
        time.sleep(2)
        check_metrics_contract(c, f"http://{instances[0]}", rules, dashboards)
        check_inhibition(c, am)

        wait_for_data(c, prom, rules, dashboards,
                      [{"instance": ".*", "route": ".*"}, {"instance": instances[1], "route": "/api/v1/info"}])
        traffic.stop()
        log(f"traffic: {traffic.sent} requests, statuses {dict(sorted(traffic.statuses.items()))}")
        c.check(traffic.statuses.get(0, 0) == 0, "every request got an answer")

        # --- outage: one replica stops; BackendDown must reach Alertmanager within the promise
        procs.stop("backend-0")
        t0 = time.monotonic()
        log(f"replica {instances[0]} stopped (exit {replicas[0].returncode}); "
            f"waiting for {DOWN_ALERT} (promise {DOWN_PROMISE_SECONDS}s)")
        c.check(replicas[0].returncode == 0, "backend exits 0 on SIGTERM")
        down_instances: set[str] = set()
        fired_after = delivered_after = None
        page_path = None
        deadline = t0 + DOWN_PROMISE_SECONDS + 20  # a little past the promise, to report a miss precisely
        while time.monotonic() < deadline:
            if fired_after is None:
                active = [a for a in am_alerts(am, DOWN_ALERT) if a["status"]["state"] == "active"]
                down_instances = {a["labels"].get("instance") for a in active}
                if active:
                    fired_after = time.monotonic() - t0
                    log(f"{DOWN_ALERT} active in Alertmanager {fired_after:.1f}s after the backend stopped")
            for at, path, payload in sink.received:
                names = {a["labels"].get("alertname") for a in payload.get("alerts", [])}
                if DOWN_ALERT in names and delivered_after is None:
                    delivered_after, page_path = at - t0, path
                    log(f"{DOWN_ALERT} delivered to {path} {delivered_after:.1f}s after the backend stopped")
            if fired_after is not None and delivered_after is not None:
                break
            time.sleep(1)
        c.check(fired_after is not None and fired_after <= DOWN_PROMISE_SECONDS,
                f"{DOWN_ALERT} reaches Alertmanager within {DOWN_PROMISE_SECONDS}s",
                f"after {fired_after}s" if fired_after else "never")
        c.check(down_instances == {instances[0]}, f"{DOWN_ALERT} names the stopped replica, not the running one",
                str(down_instances))
        c.check(page_path == "/alerts/page", f"{DOWN_ALERT} is routed to the page receiver", str(page_path))
        (workdir / "timings.json").write_text(json.dumps(
            {"backend_down_to_alertmanager_s": fired_after, "backend_down_to_page_receiver_s": delivered_after}))
    except Exception as e:  # a crash of the harness is a failure too, with the logs to explain it
        c.check(False, "live test ran to the end", repr(e))
        for name in ("backend-0", "backend-1", "prometheus", "alertmanager"):
            print(f"--- last lines of {name}.log\n{procs.tail(name)}")
    finally:
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        procs.stop_all()
        sink.close()
    return c.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the service's binary")
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--alertmanager", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(f"interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
