#!/usr/bin/env python3
"""Live end-to-end test: the real backend, Prometheus, Alertmanager, blackbox exporter and webhook
receiver on 127.0.0.1.

    live_e2e.py --binary BIN --prometheus BIN --alertmanager BIN --blackbox BIN --workdir DIR

1. Starts the webhook receiver (monitoring/alert-receiver/receiver.py), two backend replicas,
   Alertmanager, the blackbox exporter and Prometheus on free ports. Prometheus runs the
   repository's rule files with a configuration derived from monitoring/prometheus/prometheus.yml
   (same intervals and jobs; the DNS discovery of `backend` becomes file discovery of the
   replicas' 127.0.0.1 targets, a file this test rewrites; the blackbox job probes a replica
   directly, there is no load balancer here), Alertmanager the repository's routing with the
   webhook URLs pointed at the receiver.
2. Sends bounded traffic (every route, 404s, 405s) and checks the metrics contract on /metrics;
   every metric a rule or panel reads exists on the backend's, Prometheus', Alertmanager's or the
   blackbox exporter's /metrics, or is recorded.
3. Waits until both replicas are `up == 1` and EVERY recording rule and EVERY dashboard query (and
   variable) returns data, with the template variables set to "All" and to one concrete instance
   and route ($namespace stays "All": compose's series have no namespace label).
4. Stops one replica and measures how long BackendDown takes to reach Alertmanager (promise: 2
   minutes) and then the receiver's `page` path; the replica still running must not be reported.
5. Removes that replica from discovery, as Docker's DNS does with an exited container: BackendDown
   resolves, and BackendReplicaLost reaches Alertmanager and the `page` receiver within 2 minutes.
6. No rule failed to evaluate, and no meta-monitoring alert fired.

Inhibition and the receiver's output are tested by notify_e2e.py; DNS discovery itself, a load
balancer and the full game-day scenarios by monitoring/gameday/. Every process it starts is
stopped again by PID; every wait has a deadline.
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
from pathlib import Path

import yaml

from common import (
    ALERT_PREFIX,
    ALERTMANAGER_FILE,
    ALL_VARIABLES,
    BLACKBOX_FILE,
    JOB,
    PROMETHEUS_FILE,
    PROMETHEUS_SERIES,
    RECEIVER_SCRIPT,
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
LOST_ALERT = f"{ALERT_PREFIX}ReplicaLost"
DOWN_PROMISE_SECONDS = 120  # BackendDown "fires within 2 minutes" (rules/alerts.yml)
LOST_PROMISE_SECONDS = 120  # BackendReplicaLost: discovery refresh + evaluation + `for: 1m`
META_ALERTS = ("PrometheusRuleEvaluationFailures", "PrometheusConfigReloadFailed", "AlertmanagerNotificationsFailing",
               "AlertmanagerDown")
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


class ReceiverLog:
    """What the webhook receiver (monitoring/alert-receiver/receiver.py) printed: one line per alert,
    `<time> <path> <status> <alertname> severity=... instance=... summary=...`."""

    def __init__(self, path: Path):
        self.path = path

    def find(self, alertname: str, status: str = "firing") -> list[tuple[str, str]]:
        """(path, line) of every line about alertname with that status."""
        out = []
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        for line in text.splitlines():
            fields = line.split(" ", 4)
            if len(fields) >= 4 and fields[2] == status and fields[3] == alertname:
                out.append((fields[1], line))
        return out


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


def derive_prometheus_config(targets: dict[str, list[str]], am_addr: str, file_sd: Path,
                             blackbox_addr: str, probe_url: str) -> dict:
    """monitoring/prometheus/prometheus.yml with 127.0.0.1 targets; everything else kept.

    The service's job reads its targets from `file_sd` (rewritten by the test, like DNS answers
    change); the blackbox job probes probe_url through the exporter at blackbox_addr; jobs of
    services this test does not run (grafana) are dropped.
    """
    cfg = yaml.safe_load(PROMETHEUS_FILE.read_text())
    cfg["rule_files"] = [str(PROMETHEUS_FILE.parent / pattern) for pattern in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [am_addr]}]}]
    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name == JOB:
            job.pop("dns_sd_configs", None)
            job["file_sd_configs"] = [{"files": [str(file_sd)]}]
        elif name == "blackbox":
            job["static_configs"] = [{"targets": [probe_url]}]
            for relabel in job.get("relabel_configs", []):
                if relabel.get("target_label") == "__address__":
                    relabel["replacement"] = blackbox_addr
        elif name in targets:
            job["static_configs"] = [{"targets": targets[name]}]
        else:
            continue  # e.g. grafana: not running in this test
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg


def write_targets(file_sd: Path, instances: list[str]) -> None:
    """What discovery returns, like Docker's DNS: written whole, then renamed into place."""
    tmp = file_sd.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": instances}]))
    tmp.replace(file_sd)


def derive_alertmanager_config(receiver_addr: str) -> dict:
    """monitoring/alertmanager/alertmanager.yml with every webhook sent to the receiver, same path."""
    cfg = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(hook["url"]).path
            hook["url"] = f"http://{receiver_addr}{path}"
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


def check_metrics_contract(c: Checks, metrics_base: str, rules, dashboards, others: dict[str, str]) -> None:
    """The service's /metrics against docs/contract.md; every name a rule or panel reads exists.

    others: {what: URL} of the other exporters whose series rules and panels read (Prometheus,
    Alertmanager, the blackbox exporter's probe), checked for those names as the real versions
    expose them.
    """
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
    for what, url in others.items():
        other_status, _, other_body = http("GET", url, timeout=10)
        c.check(other_status == 200, f"{what} answers {url}", str(other_status))
        exposed |= exposed_names(*parse_exposition(other_body.decode(errors="replace")))
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
        c.check(ok, f"metric {name} (used by {len(where)} rules/panels) is exposed or recorded",
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
            # a variable's query may use the variables before it ($namespace): set to "All"
            queries[f"{fname} variable ${var}"] = substitute(selector, ALL_VARIABLES)

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


def wait_for_alert(am: str, receiver: ReceiverLog, alertname: str, t0: float, promise: float,
                   done=lambda: True) -> tuple[float | None, float | None, str | None, list[dict]]:
    """Polls until alertname is active in Alertmanager and printed by the receiver (and done()).

    Returns (seconds to Alertmanager, seconds to the receiver, the receiver's path, active alerts).
    """
    fired_after = delivered_after = None
    path = None
    active: list[dict] = []
    deadline = t0 + promise + 20  # a little past the promise, to report a miss precisely
    while time.monotonic() < deadline:
        if fired_after is None:
            active = [a for a in am_alerts(am, alertname) if a["status"]["state"] == "active"]
            if active:
                fired_after = time.monotonic() - t0
                log(f"{alertname} active in Alertmanager after {fired_after:.1f}s")
        if delivered_after is None:
            lines = receiver.find(alertname)
            if lines:
                delivered_after, path = time.monotonic() - t0, lines[0][0]
                log(f"{alertname} delivered to {path} after {delivered_after:.1f}s: {lines[0][1]}")
        if fired_after is not None and delivered_after is not None and done():
            break
        time.sleep(1)
    return fired_after, delivered_after, path, active


def run(args: argparse.Namespace) -> int:
    c = Checks("live end-to-end")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Processes(workdir)
    apis, metrics = [free_port(), free_port()], [free_port(), free_port()]
    prom_port, am_port, receiver_port, blackbox_port = free_port(), free_port(), free_port(), free_port()
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    blackbox = f"http://127.0.0.1:{blackbox_port}"
    api_bases = [f"http://127.0.0.1:{p}" for p in apis]
    instances = [f"127.0.0.1:{p}" for p in metrics]
    probe_url = api_bases[1] + "/api/v1/health"  # the replica that keeps running
    file_sd = workdir / "targets.json"
    receiver = ReceiverLog(workdir / "alert-receiver.log")
    traffic = None
    rules, dashboards = load_rules(), load_dashboards()
    try:
        procs.start("alert-receiver", [sys.executable, str(RECEIVER_SCRIPT), "--listen", f"127.0.0.1:{receiver_port}"])
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
        procs.start("blackbox", [args.blackbox, f"--config.file={BLACKBOX_FILE}",
                                 f"--web.listen-address=127.0.0.1:{blackbox_port}"])

        am_cfg = workdir / "alertmanager.yml"
        am_cfg.write_text(yaml.safe_dump(derive_alertmanager_config(f"127.0.0.1:{receiver_port}"), sort_keys=False))
        procs.start("alertmanager", [
            args.alertmanager, f"--config.file={am_cfg}", f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ])
        write_targets(file_sd, instances)
        prom_cfg_data = derive_prometheus_config(
            {"prometheus": [f"127.0.0.1:{prom_port}"], "alertmanager": [f"127.0.0.1:{am_port}"]},
            f"127.0.0.1:{am_port}", file_sd, f"127.0.0.1:{blackbox_port}", probe_url,
        )
        prom_cfg = workdir / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump(prom_cfg_data, sort_keys=False))
        log(f"derived Prometheus config: scrape {prom_cfg_data['global']['scrape_interval']}, "
            f"evaluation {prom_cfg_data['global']['evaluation_interval']} (as in compose), {prom_cfg}")
        procs.start("prometheus", [
            args.prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ])
        wait_for(f"http://127.0.0.1:{receiver_port}/-/healthy", 10, "alert-receiver")
        wait_for(blackbox + "/-/healthy", 10, "blackbox exporter")
        wait_for(am + "/-/ready", 20, "alertmanager")
        wait_for(prom + "/-/ready", 30, "prometheus")
        rule_groups = json.loads(http("GET", prom + "/api/v1/rules")[2])["data"]["groups"]
        loaded = sum(len(g["rules"]) for g in rule_groups)
        c.check(loaded == len(rules), f"Prometheus loaded all {len(rules)} rules of {RULES_DIR.name}/", str(loaded))

        traffic = Traffic(api_bases)
        traffic.start()
        time.sleep(2)
        probe = f"{blackbox}/probe?" + urllib.parse.urlencode({"module": "http_2xx", "target": probe_url})
        check_metrics_contract(c, f"http://{instances[0]}", rules, dashboards, {
            "Prometheus": prom + "/metrics", "Alertmanager": am + "/metrics", "the blackbox probe": probe})

        wait_for_data(c, prom, rules, dashboards,
                      # compose has no namespace label: "All" (.*) is $namespace's only choice
                      [ALL_VARIABLES, {"namespace": ".*", "instance": instances[1], "route": "/api/v1/info"}])
        traffic.stop()
        log(f"traffic: {traffic.sent} requests, statuses {dict(sorted(traffic.statuses.items()))}")
        c.check(traffic.statuses.get(0, 0) == 0, "every request got an answer")

        # --- a replica stops but stays discovered (like a hung one): BackendDown within the promise
        procs.stop("backend-0")
        t0 = time.monotonic()
        log(f"replica {instances[0]} stopped (exit {replicas[0].returncode}); "
            f"waiting for {DOWN_ALERT} (promise {DOWN_PROMISE_SECONDS}s)")
        c.check(replicas[0].returncode == 0, "backend exits 0 on SIGTERM")
        fired_after, delivered_after, page_path, active = wait_for_alert(
            am, receiver, DOWN_ALERT, t0, DOWN_PROMISE_SECONDS)
        down_instances = {a["labels"].get("instance") for a in active}
        c.check(fired_after is not None and fired_after <= DOWN_PROMISE_SECONDS,
                f"{DOWN_ALERT} reaches Alertmanager within {DOWN_PROMISE_SECONDS}s",
                f"after {fired_after}s" if fired_after else "never")
        c.check(down_instances == {instances[0]}, f"{DOWN_ALERT} names the stopped replica, not the running one",
                str(down_instances))
        c.check(page_path == "/alerts/page", f"{DOWN_ALERT} is printed by the receiver as a page", str(page_path))

        # --- it leaves discovery, as an exited container leaves Docker's DNS: BackendReplicaLost
        write_targets(file_sd, instances[1:])
        t1 = time.monotonic()
        log(f"replica {instances[0]} removed from discovery; waiting for {LOST_ALERT} (promise {LOST_PROMISE_SECONDS}s)")

        def down_resolved() -> bool:
            return not [a for a in am_alerts(am, DOWN_ALERT) if a["status"]["state"] == "active"]

        lost_after, lost_delivered_after, lost_path, _ = wait_for_alert(
            am, receiver, LOST_ALERT, t1, LOST_PROMISE_SECONDS, done=down_resolved)
        c.check(lost_after is not None and lost_after <= LOST_PROMISE_SECONDS,
                f"{LOST_ALERT} reaches Alertmanager within {LOST_PROMISE_SECONDS}s of leaving discovery",
                f"after {lost_after}s" if lost_after else "never")
        c.check(lost_path == "/alerts/page", f"{LOST_ALERT} is printed by the receiver as a page", str(lost_path))
        c.check(down_resolved(), f"{DOWN_ALERT} resolves once the replica has left discovery")

        # --- nothing broke on the way: every rule evaluated, no meta alert
        failures = prom_query(prom, 'sum(prometheus_rule_evaluation_failures_total{job="prometheus"})')
        c.check(bool(failures) and float(failures[0]["value"][1]) == 0, "no rule failed to evaluate",
                json.dumps(failures))
        meta = [name for name in META_ALERTS if am_alerts(am, name)]
        c.check(not meta, "no meta-monitoring alert fired", str(meta))
        (workdir / "timings.json").write_text(json.dumps({
            "backend_down_to_alertmanager_s": fired_after, "backend_down_to_page_receiver_s": delivered_after,
            "replica_lost_to_alertmanager_s": lost_after, "replica_lost_to_page_receiver_s": lost_delivered_after,
        }))
    except Exception as e:  # a crash of the harness is a failure too, with the logs to explain it
        c.check(False, "live test ran to the end", repr(e))
        for name in ("backend-0", "backend-1", "prometheus", "alertmanager", "blackbox", "alert-receiver"):
            print(f"--- last lines of {name}.log\n{procs.tail(name)}")
    finally:
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        procs.stop_all()
    return c.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the service's binary")
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--alertmanager", required=True)
    parser.add_argument("--blackbox", required=True, help="the blackbox exporter")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(f"interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
