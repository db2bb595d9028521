#!/usr/bin/env python3
"""One game-day stack, run inside its own namespaces by gameday.py (never directly on the host):

    unshare --mount --net --pid --fork --mount-proc --kill-child=SIGTERM \
        python3 stack.py NAME --workdir DIR --binary BIN --deadline SECONDS --outer-ns MNT,NET

It refuses to run unless it is PID 1 of a fresh PID namespace with a mount and network namespace
other than the caller's. Then it makes the namespaces look like the compose network (loopback up,
/etc/resolv.conf -> 127.0.0.11, a container's /etc/hosts, a private /tmp), starts the services
(components.py), checks that Prometheus discovers exactly what DNS answers, runs clean traffic for
the warm-up (steady state: nothing may fire), then the stack's scenarios from scenarios.py, each
as a runbook: arrange the fault, wait as Prometheus and Alertmanager really wait, assert what the
receiver printed and when. Writes DIR/result.json. When it exits, for any reason, the kernel ends
every process of its PID namespace; it stops them itself first, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

import faults
from components import (
    API_PORT,
    BINARIES,
    BLACKBOX_SERVICE,
    DNS_IP,
    IMAGE_USERS,
    IPS,
    METRICS_PORT,
    PORTS,
    RECEIVER_SERVICE,
    REPLICA_IPS,
    ROOT,
    SERVICE,
    Dns,
    Processes,
    command,
    compose_services,
    compose_user,
    copy_prometheus_dir,
    derive_nginx_conf,
    dig,
    environment,
    image_user_and_env,
    map_args,
    mounts,
    sha256,
    wait_http,
)
from observe import Watcher, episodes, get_json, http, prom_query, prom_value
from scenarios import (
    HOLD_SECONDS,
    TRAFFIC_RPS,
    WAIT_MARGIN_SECONDS,
    Alert,
    Scenario,
    scenarios_of,
    warmup_seconds,
)
from traffic import Traffic

sys.path.insert(0, str(ROOT / "scripts" / "monitoring"))
from common import ALERTMANAGER_FILE, JOB, PROMETHEUS_FILE, SLO_FILE  # noqa: E402

START = time.monotonic()
SYSTEM_PYTHON = "/usr/bin/python3"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - START:5.0f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------- namespaces
def enter_namespaces(stack_dir: Path, outer_ns: str) -> None:
    """Make this PID namespace's mount and network namespaces look like a compose network."""
    outer_mnt, outer_net = outer_ns.split(",")
    mnt, net = os.readlink("/proc/self/ns/mnt"), os.readlink("/proc/self/ns/net")
    if os.getpid() != 1 or mnt == outer_mnt or net == outer_net:
        sys.exit(f"stack.py must run as PID 1 in new mount/net/pid namespaces (pid {os.getpid()}, "
                 f"mnt {mnt} vs {outer_mnt}, net {net} vs {outer_net}); gameday.py starts it")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    etc = stack_dir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    # What Docker writes into a container on a user-defined network.
    (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions ndots:0\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    tmp = stack_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    # A checkout, tools or work dir under /tmp (a CI clone there) must stay visible under the
    # private /tmp: its top-level directory is bound back into it, at the same path.
    for keep in sorted({top for p in (Path(__file__), Path(sys.prefix), stack_dir)
                        if (top := top_under_tmp(p.resolve())) is not None}):
        inside = tmp / keep.relative_to("/tmp")
        inside.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(keep), str(inside)], check=True)
    for src, dst in ((etc / "resolv.conf", "/etc/resolv.conf"), (etc / "hosts", "/etc/hosts")):
        subprocess.run(["mount", "--bind", str(src), dst], check=True)
    # Recursive, so that the directories bound back into it come along.
    subprocess.run(["mount", "--rbind", str(tmp), "/tmp"], check=True)


def top_under_tmp(path: Path) -> Path | None:
    """/tmp/x for a path /tmp/x/..., else None."""
    parts = path.parts
    return Path("/tmp", parts[2]) if len(parts) > 2 and parts[:2] == ("/", "tmp") else None


# ------------------------------------------------------------------------------- results
@dataclass
class Row:
    scenario: str
    stack: str
    fault: str
    expect_text: str = ""         # for the rows that expect no alert
    expected: list[dict] = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    users: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


class FaultUnavailable(Exception):
    """The fault cannot be injected (e.g. no /faults endpoint yet)."""


@dataclass
class Fault:
    undo: callable = None
    after_seen: callable = None   # called once the alerts that cannot be delivered were seen


# ------------------------------------------------------------------------------- the stack
class Stack:
    def __init__(self, name: str, stack_dir: Path, binary: str, overrides: dict[str, Path]):
        self.name, self.dir, self.binary = name, stack_dir, binary
        self.overrides = overrides
        self.services = compose_services()
        (stack_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = Processes(stack_dir / "logs", log)
        self.dns = Dns(stack_dir, procs=self.procs)
        self.setup: list[dict] = []   # setup checks: {"check", "ok", "detail"}
        self.prom = f"http://{IPS['prometheus']}:{PORTS['prometheus']}"
        self.am = f"http://{IPS['alertmanager']}:{PORTS['alertmanager']}"
        self.lb = f"http://{IPS['lb']}:{API_PORT}"
        self.prom_dir: Path | None = None   # the folder mounted at /etc/prometheus (copy, if any)
        self.as_root = False                # True: every service as root (files not reachable)
        self.watcher = Watcher(self.prom, self.am, log)
        self.receiver_log = open(stack_dir / "logs" / "receiver-notifications.log", "a")

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        self.setup.append({"check": what, "ok": bool(ok), "detail": detail})
        log(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
        return ok

    # --- replicas
    def replica_name(self, i: int) -> str:
        return f"{SERVICE}-{i + 1}"

    def start_replica(self, i: int, add_record: bool = True) -> None:
        """A replica as the image runs it (its USER and ENV) with compose's environment; it listens
        on its own address, as a container listens on its own network namespace's."""
        ip = REPLICA_IPS[i]
        user, image_env = image_user_and_env()
        env = {"PATH": "/usr/bin:/bin", **image_env, **environment(self.services[SERVICE]),
               "APP__SERVER__HOST": ip, "APP__SERVER__PORT": str(API_PORT),
               "APP__METRICS__HOST": ip, "APP__METRICS__PORT": str(METRICS_PORT)}
        name = self.replica_name(i)
        self.procs.start(name, [self.binary], env=env, user=None if self.as_root else user)
        if not wait_http(f"http://{ip}:{API_PORT}/api/v1/health", 15):
            raise RuntimeError(f"{name} did not answer on {ip}:{API_PORT}:\n{self.procs.tail(name)}")
        if add_record:
            self.dns.add(name, SERVICE, ip)

    def replica_pid(self, i: int) -> int:
        return self.procs.procs[self.replica_name(i)].pid

    # --- the other services
    def start_nginx(self) -> None:
        text, change = derive_nginx_conf(IPS["lb"])
        d = self.dir / "nginx"
        (d / "logs").mkdir(parents=True, exist_ok=True)
        (d / "nginx.conf").write_text(text)
        self.nginx_change = change
        self.procs.start("lb", ["nginx", "-e", "stderr", "-p", f"{d}/", "-c", str(d / "nginx.conf"),
                                "-g", "daemon off;"])
        self.check(wait_http("http://127.0.0.1:8080/lb-health", 10), "lb (nginx) answers /lb-health on :8080")
        self.dns.add("lb", "lb", IPS["lb"])

    def _start_service(self, service: str, listen: str, overrides: dict[str, Path] | None = None) -> list[str]:
        """A compose service's command run by its image's Debian binary, as the image's user."""
        svc = self.services[service]
        user = None if self.as_root else compose_user(svc) or IMAGE_USERS.get(service)
        m = mounts(svc, self.dir, {**self.overrides, **(overrides or {})}, owner=user)
        argv = [BINARIES[service], *map_args(command(svc), m), f"--web.listen-address={listen}"]
        config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config.file=")), None)
        self.procs.start(service, argv, user=user)
        return Path(config) if config else None

    def start_prometheus(self, copy_config: bool) -> None:
        overrides = {}
        if copy_config:
            self.prom_dir = copy_prometheus_dir(self.dir / "prometheus-config")
            overrides["monitoring/prometheus"] = self.prom_dir
        # The image listens on 0.0.0.0:9090, and the configuration scrapes itself at localhost:9090:
        # in this stack nothing else uses port 9090, so localhost is Prometheus' own loopback too.
        self.prom_config = self._start_service("prometheus", f"0.0.0.0:{PORTS['prometheus']}", overrides)
        if self.prom_dir is None:
            self.prom_dir = self.prom_config.parent
        self.check(sha256(self.prom_config) == sha256(PROMETHEUS_FILE),
                   "Prometheus runs monitoring/prometheus/prometheus.yml unchanged", str(self.prom_config))
        self.dns.add("prometheus", "prometheus", IPS["prometheus"])
        self.check(wait_http(self.prom + "/-/ready", 60), "Prometheus is ready",
                   self.procs.tail("prometheus"))

    def start_alertmanager(self) -> None:
        config = self._start_service("alertmanager", f"{IPS['alertmanager']}:{PORTS['alertmanager']}")
        self.check(sha256(config) == sha256(ALERTMANAGER_FILE),
                   "Alertmanager runs monitoring/alertmanager/alertmanager.yml unchanged", str(config))
        self.check(wait_http(self.am + "/-/ready", 30), "Alertmanager is ready", self.procs.tail("alertmanager"))
        self.dns.add("alertmanager", "alertmanager", IPS["alertmanager"])

    def receiver_argv(self) -> list[str] | None:
        """The compose service's command, the image's python3 being Debian's /usr/bin/python3 (the
        receiver is standard library only; a virtualenv under /root is not for user nobody). The container listens on all of its addresses; here it takes
        its own only, so that 127.0.0.1:5001 stays no one's, as in Alertmanager's container."""
        svc = self.services.get(RECEIVER_SERVICE)
        if svc is None or not command(svc):
            return None
        args = map_args(command(svc), mounts(svc, self.dir, self.overrides))
        if Path(args[0]).name.startswith("python"):
            args = args[1:]
        args = [a.replace("0.0.0.0:", f"{IPS[RECEIVER_SERVICE]}:") for a in args]
        return [SYSTEM_PYTHON, "-u", *args]

    def start_receiver(self) -> None:
        argv = self.receiver_argv()
        if argv is None:
            self.check(False, f"the webhook receiver (compose service {RECEIVER_SERVICE}) runs",
                       f"docker-compose.yml has no service {RECEIVER_SERVICE} with a command")
            return
        svc = self.services[RECEIVER_SERVICE]
        proc = self.procs.start(RECEIVER_SERVICE, argv, stdout_pipe=True,
                                user=None if self.as_root else compose_user(svc))
        self.watcher.feed_receiver(proc.stdout, self.receiver_log)
        url = f"http://{IPS[RECEIVER_SERVICE]}:{PORTS[RECEIVER_SERVICE]}/-/healthy"
        self.check(wait_http(url, 10), f"the webhook receiver is healthy ({url})", self.procs.tail(RECEIVER_SERVICE))
        self.dns.add(RECEIVER_SERVICE, RECEIVER_SERVICE, IPS[RECEIVER_SERVICE])

    def start_blackbox(self) -> None:
        if BLACKBOX_SERVICE not in self.services:
            self.check(False, f"the blackbox exporter (compose service {BLACKBOX_SERVICE}) runs",
                       "no such service in docker-compose.yml: the load balancer is not probed")
            return
        self._start_service(BLACKBOX_SERVICE, f"{IPS['blackbox']}:{PORTS['blackbox']}")
        self.dns.add(BLACKBOX_SERVICE, BLACKBOX_SERVICE, IPS["blackbox"])
        self.check(wait_http(f"http://{IPS['blackbox']}:{PORTS['blackbox']}/-/healthy", 15),
                   "the blackbox exporter is healthy", self.procs.tail(BLACKBOX_SERVICE))

    # --- what Prometheus sees
    def targets(self, job: str) -> set[str]:
        data = get_json(self.prom + "/api/v1/targets?state=active")
        return {t["labels"]["instance"] for t in data["data"]["activeTargets"] if t["labels"].get("job") == job}

    def targets_down(self) -> list[str]:
        """Active targets not up, but Grafana's: this stack runs no Grafana (no record either)."""
        data = get_json(self.prom + "/api/v1/targets?state=active")
        return sorted(f"{t['labels'].get('job')}/{t['labels'].get('instance')}: {t.get('lastError')}"
                      for t in data["data"]["activeTargets"]
                      if t["health"] != "up" and t["labels"].get("job") != "grafana")

    def loaded_alerts(self) -> set[str]:
        data = get_json(self.prom + "/api/v1/rules?type=alert")
        return {r["name"] for g in data["data"]["groups"] for r in g["rules"]}

    def reload_prometheus(self) -> int:
        return http("POST", self.prom + "/-/reload", body=b"", timeout=10)[0]

    def stop_all(self) -> None:
        try:
            self.watcher.stop()
        except RuntimeError:
            pass
        self.procs.stop_all()


def wait_until(cond, seconds: float, step: float = 1.0) -> float | None:
    """Polls cond() until true; the seconds it took, or None at the deadline."""
    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - t0
        except (OSError, RuntimeError, ValueError, KeyError):
            pass
        if time.monotonic() - t0 >= seconds:
            return None
        time.sleep(step)


# ------------------------------------------------------------------------------- faults
def put_faults(stack: Stack, indexes, settings: dict | None) -> None:
    """PUT (or, for None, DELETE) /faults on replicas, with faults.py: the tool the docs give."""
    for i in indexes:
        method = "DELETE" if settings is None else "PUT"
        status, body = faults.call(REPLICA_IPS[i], method, settings, METRICS_PORT)
        if status != 200:
            raise FaultUnavailable(f"{method} http://{REPLICA_IPS[i]}:{METRICS_PORT}/faults answered {status} "
                                   f"{body[:120]!r}: no fault injection on the metrics port")


def act_hang(stack: Stack, sc: Scenario, row: Row) -> Fault:
    pid = stack.replica_pid(0)
    os.kill(pid, signal.SIGSTOP)
    row.notes.append(f"{stack.replica_name(0)} ({REPLICA_IPS[0]}) stopped with SIGSTOP, still in DNS")
    return Fault(undo=lambda: os.kill(pid, signal.SIGCONT))


def act_crash(stack: Stack, sc: Scenario, row: Row) -> Fault:
    i = 1
    stack.procs.stop(stack.replica_name(i), sig=signal.SIGKILL)
    stack.dns.remove(stack.replica_name(i))
    row.notes.append(f"{stack.replica_name(i)} ({REPLICA_IPS[i]}) killed, A record removed; "
                     f"DNS now answers {dig(SERVICE)[1]}")
    return Fault(undo=lambda: stack.start_replica(i))


def act_all_down(stack: Stack, sc: Scenario, row: Row) -> Fault:
    for i in range(len(REPLICA_IPS)):
        stack.procs.stop(stack.replica_name(i), sig=signal.SIGKILL)
        stack.dns.remove(stack.replica_name(i))
    status, answers = dig(SERVICE)
    row.notes.append(f"every replica killed; DNS answers {SERVICE}: {status} {answers}")
    if status != "NXDOMAIN":
        row.failures.append(f"with no replica, {SERVICE} must be NXDOMAIN as in Docker's DNS, got {status}")

    def undo():
        for i in range(len(REPLICA_IPS)):
            stack.start_replica(i)
    return Fault(undo=undo)


def faults_cli(stack: Stack, *args: str) -> list[str]:
    """faults.py as the docs run it in the compose stack (`python3 - ... < faults.py`, every
    replica found through DNS); its output lines, one per replica."""
    with open(faults.__file__, "rb") as script:
        out = subprocess.run([SYSTEM_PYTHON, "-", "--name", SERVICE, *args], stdin=script,
                             capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != len(REPLICA_IPS):
        raise FaultUnavailable(f"faults.py {' '.join(args)}: exit {out.returncode}: {out.stdout[-300:]} "
                               f"{out.stderr[-300:]}")
    return lines


def act_inject(stack: Stack, sc: Scenario, row: Row) -> Fault:
    lines = faults_cli(stack, "set", json.dumps(sc.params))
    row.notes.append(f"faults.py set {json.dumps(sc.params)}: {len(lines)} replicas answered 200")
    return Fault(undo=lambda: faults_cli(stack, "off"))


def act_sparse_errors(stack: Stack, sc: Scenario, row: Row) -> Fault:
    """A replica restarts; then one 500 a minute on it. The SLI must count each, the first too."""
    i = 2
    ip, name = REPLICA_IPS[i], stack.replica_name(i)
    instance = f"{ip}:{METRICS_PORT}"
    stack.procs.stop(name)                         # SIGTERM, like a deploy or a docker restart
    stack.start_replica(i)                         # same address, record kept
    started = time.time()
    seen = wait_until(lambda: prom_value(stack.prom, f'process_start_time_seconds{{instance="{instance}"}}')
                      >= started - 5, 45, step=2)
    if seen is None:
        row.failures.append(f"Prometheus did not scrape the restarted {name} within 45s")
        return Fault()
    time.sleep(35)  # two more scrapes of the new process before its first error
    zero = prom_query(stack.prom, f'http_requests_total{{instance="{instance}", status=~"5..", '
                                  f'endpoint="/api/v1/info"}}')
    statuses = sorted(s['metric'].get('status') for s in zero)
    row.notes.append(f"5xx series of /api/v1/info before the first error: {statuses or 'none'}")
    # The service creates them at start (routes::router lists its routes): without them the
    # first error after a restart has no earlier sample, and rate() never counts it.
    if "500" not in statuses:
        row.failures.append("no 500 series of /api/v1/info before the first error after the restart")
    sli = 'slo:sli_error:ratio_rate5m{slo="availability"}'
    route_5xx = 'job_endpoint:http_requests_5xx:rate5m{endpoint="/api/v1/info"}'
    for k in range(sc.params["errors"]):
        t_err = time.monotonic()
        put_faults(stack, [i], {"error_ratio": 1.0, "error_statuses": [500]})
        try:
            status = http("GET", f"http://{ip}:{API_PORT}/api/v1/info", timeout=5)[0]
        finally:
            put_faults(stack, [i], None)
        if status != 500:
            row.failures.append(f"error {k + 1}: the faulted request answered {status}, not 500")
        served = f'sum(http_requests_total{{instance="{instance}", status="500"}})'
        # Counted: the replica served it, its route's 5xx rate and the availability SLI see it.
        took = wait_until(lambda: (prom_value(stack.prom, served) or 0) >= k + 1
                          and (prom_value(stack.prom, route_5xx) or 0) > 0
                          and (prom_value(stack.prom, sli) or 0) > 0, sc.params["counted_within"], step=2)
        value, rate = prom_value(stack.prom, sli), prom_value(stack.prom, route_5xx)
        if took is None:
            row.failures.append(f"error {k + 1} after the restart not counted within {sc.params['counted_within']}s: "
                                f"{sli} = {value}, {route_5xx} = {rate}")
        else:
            row.measured.append({"alert": f"500 #{k + 1} counted in the SLI", "fire_s": round(took, 1)})
            row.notes.append(f"error {k + 1}: counted after {took:.0f}s: SLI 5m = {value:.5f}, "
                             f"/api/v1/info 5xx rate = {rate:.5f}/s")
        if k + 1 < sc.params["errors"]:
            time.sleep(max(0.0, sc.params["every_seconds"] - (time.monotonic() - t_err)))
    return Fault()


def act_receiver_down(stack: Stack, sc: Scenario, row: Row) -> Fault:
    stack.procs.stop(RECEIVER_SERVICE)
    stack.dns.remove(RECEIVER_SERVICE)
    pid = stack.replica_pid(0)
    os.kill(pid, signal.SIGSTOP)
    row.notes.append(f"receiver stopped (A record removed); {stack.replica_name(0)} hung with SIGSTOP")

    def back():
        stack.start_receiver()
        row.notes.append(f"receiver started again at +{time.monotonic() - row_start[0]:.0f}s")
    row_start = [time.monotonic()]
    return Fault(undo=lambda: os.kill(pid, signal.SIGCONT), after_seen=back)


def act_alertmanager_down(stack: Stack, sc: Scenario, row: Row) -> Fault:
    stack.procs.stop("alertmanager")
    stack.dns.remove("alertmanager")
    return Fault(undo=stack.start_alertmanager)


BROKEN_RULE = """\
# Added by the game day: a rule that fails at every evaluation (many-to-many match on `up`).
groups:
  - name: gameday-broken
    rules:
      - record: gameday:broken:many_to_many
        expr: up * on () up
"""
UNPARSABLE_RULE = """\
# Added by the game day: Prometheus cannot load this (an invalid metric name), so reloads fail.
groups:
  - name: gameday-unparsable
    rules:
      - record: "not a metric name"
        expr: up
"""


def act_rule_file(content: str):
    def act(stack: Stack, sc: Scenario, row: Row) -> Fault:
        path = stack.prom_dir / "rules" / sc.params["file"]
        path.write_text(content)
        status = stack.reload_prometheus()
        row.notes.append(f"wrote rules/{path.name}; POST /-/reload answered {status}")

        def undo():
            path.unlink(missing_ok=True)
            row.notes.append(f"removed rules/{path.name}; POST /-/reload answered {stack.reload_prometheus()}")
        return Fault(undo=undo)
    return act


ACTIONS = {
    "hang": act_hang,
    "crash": act_crash,
    "all_down": act_all_down,
    "errors": act_inject,
    "latency": act_inject,
    "sparse_errors": act_sparse_errors,
    "receiver_down": act_receiver_down,
    "alertmanager_down": act_alertmanager_down,
    "broken_rule": act_rule_file(BROKEN_RULE),
    "bad_reload": act_rule_file(UNPARSABLE_RULE),
}
RECEIVERS = {"page": "page", "ticket": "ticket"}  # severity -> receiver (alertmanager.yml routes)


# ------------------------------------------------------------------------------- scenarios
class Runner:
    def __init__(self, stack: Stack, traffic: Traffic, deadline: float):
        self.stack, self.traffic, self.deadline = stack, traffic, deadline
        self.loaded: set[str] = set()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def seen(self, alert: Alert, after: float) -> float | None:
        w = self.stack.watcher
        if alert.seen_in == "receiver":
            hit = w.first_delivered(alert.name, "firing", after)
            return hit[0] if hit else None
        if alert.seen_in == "alertmanager":
            return w.first_change("alertmanager", alert.name, ("active", "suppressed"), after)
        return w.first_change("prometheus", alert.name, ("firing",), after)

    def run(self, sc: Scenario) -> Row:
        w = self.stack.watcher
        row = Row(sc.name, sc.stack, sc.fault, expect_text="no alert" if not sc.expect else "",
                  expected=[{"alert": a.name, "severity": a.severity, "fire_within": a.fire_within,
                             "resolve_within": a.resolve_within, "seen_in": a.seen_in, "hold": a.hold,
                             "note": a.note} for a in sc.expect])
        for alert, why in sc.not_waited:
            row.notes.append(f"not waited for: {alert}: {why}")
        missing = sorted({a.name for a in sc.expect} - self.loaded)
        if missing:
            row.notes.append(f"not in the loaded rules: {', '.join(missing)}")
        longest = max([a.fire_within for a in sc.expect] + [0]) + WAIT_MARGIN_SECONDS
        if self.left() < longest:
            row.failures.append(f"not run: {self.left():.0f}s left of the stack's time, it needs {longest}s")
            return row
        log(f"--- scenario: {sc.name}: {sc.fault}")
        t0 = time.monotonic()
        try:
            fault = ACTIONS[sc.action](self.stack, sc, row)
        except FaultUnavailable as e:
            row.failures.append(str(e))
            row.seconds = time.monotonic() - t0
            return row
        fired: dict[str, float] = {}
        # Act: wait as Prometheus and Alertmanager really wait.
        undelivered = [a for a in sc.expect if a.seen_in != "receiver"]
        after_seen_done = fault.after_seen is None
        while True:
            for a in sc.expect:
                if a.name not in fired and (t := self.seen(a, t0)) is not None:
                    fired[a.name] = t
                    log(f"{a.name} {'delivered' if a.seen_in == 'receiver' else 'seen in ' + a.seen_in} "
                        f"after {t - t0:.0f}s")
            if not after_seen_done and (all(a.name in fired for a in undelivered)
                                        or time.monotonic() - t0 > max(a.fire_within for a in undelivered)
                                        + WAIT_MARGIN_SECONDS):
                fault.after_seen()
                after_seen_done = True
            holds = [fired[a.name] + HOLD_SECONDS for a in sc.expect if a.hold and a.name in fired]
            done = all(a.name in fired for a in sc.expect) and after_seen_done
            if done and all(time.monotonic() >= h for h in holds):
                break
            # Give up at the longest promise; but a hold, once started, is watched to its end.
            if time.monotonic() > max([t0 + longest] + holds) or self.left() < 5:
                break
            time.sleep(1)
        t_fix = time.monotonic()
        log(f"fixing: {sc.name}")
        if fault.undo:
            fault.undo()
        resolved: dict[str, float] = {}
        waits = [a for a in sc.expect if a.resolve_within is not None and a.name in fired]
        while waits:
            for a in waits:
                if a.name not in resolved and (hit := w.first_delivered(a.name, "resolved", t_fix)):
                    resolved[a.name] = hit[0]
                    log(f"{a.name} resolved, delivered after {hit[0] - t_fix:.0f}s")
            if all(a.name in resolved for a in waits):
                break
            if time.monotonic() - t_fix > max(a.resolve_within for a in waits) + WAIT_MARGIN_SECONDS:
                break
            if self.left() < 5:
                row.failures.append("stopped waiting for resolutions: the stack's time is up")
                break
            time.sleep(1)
        t_end = time.monotonic()
        row.seconds = round(t_end - t0, 1)
        # Assert: what a person received, and when.
        for a in sc.expect:
            m = {"alert": a.name, "seen_in": a.seen_in}
            t = fired.get(a.name)
            prom_t = w.first_change("prometheus", a.name, ("firing",), t0)
            am_t = w.first_change("alertmanager", a.name, ("active", "suppressed"), t0)
            m["prometheus_firing_s"] = round(prom_t - t0, 1) if prom_t else None
            m["alertmanager_active_s"] = round(am_t - t0, 1) if am_t else None
            if t is None:
                row.failures.append(f"{a.name} never {self._seen_word(a)} within {t_fix - t0:.0f}s "
                                    f"(promise {a.fire_within}s)")
            else:
                m["fire_s"] = round(t - t0, 1)
                if t - t0 > a.fire_within:
                    row.failures.append(f"{a.name} {self._seen_word(a)} after {t - t0:.0f}s, "
                                        f"promise {a.fire_within}s")
                if a.seen_in == "receiver":
                    hit = w.delivered(a.name, "firing", t0)[0][0]
                    m["receiver"] = hit.receiver
                    if hit.receiver != RECEIVERS.get(a.severity):
                        row.failures.append(f"{a.name} went to receiver {hit.receiver!r}, "
                                            f"not {RECEIVERS.get(a.severity)!r}")
                    sev = w.delivered(a.name, "firing", t0)[0][1].labels.get("severity")
                    if sev != a.severity:
                        row.failures.append(f"{a.name} has severity {sev!r}, expected {a.severity!r}")
                if a.hold:
                    early = w.delivered(a.name, "resolved", t, t_fix)
                    if t_fix - t < HOLD_SECONDS - 2:
                        row.failures.append(f"{a.name} watched only {t_fix - t:.0f}s of {HOLD_SECONDS}s")
                    if early:
                        row.failures.append(f"{a.name} resolved during the outage (after "
                                            f"{early[0][0].t - t0:.0f}s): not one incident")
            if a.name in resolved:
                m["resolve_s"] = round(resolved[a.name] - t_fix, 1)
                if resolved[a.name] - t_fix > a.resolve_within:
                    row.failures.append(f"{a.name} resolved after {resolved[a.name] - t_fix:.0f}s, "
                                        f"promise {a.resolve_within}s")
            elif a.resolve_within is not None and t is not None:
                row.failures.append(f"{a.name} not resolved within {a.resolve_within}s of the fix")
            row.measured.append(m)
        # Nothing else pages.
        ok_names = {a.name for a in sc.expect} | set(sc.allowed)
        delivered = w.delivered(status="firing", after=t0, before=t_end)
        row.delivered = sorted({f"{a.alertname} -> {n.receiver}" for n, a in delivered})
        unexpected = sorted({a.alertname for n, a in delivered if a.alertname not in ok_names})
        if unexpected:
            row.failures.append(f"unexpected notifications: {', '.join(unexpected)}")
        row.users = self.traffic.window(t0, t_end)
        row.notes.append(f"users through lb: {row.users}")
        log(f"--- {sc.name}: {'PASS' if row.passed else 'FAIL'} in {row.seconds:.0f}s"
            + "".join(f"\n      {f}" for f in row.failures))
        return row

    @staticmethod
    def _seen_word(a: Alert) -> str:
        return {"receiver": "delivered", "alertmanager": "active in Alertmanager",
                "prometheus": "firing in Prometheus"}[a.seen_in]


# ------------------------------------------------------------------------------- the run
def dns_self_check(stack: Stack, traffic: Traffic) -> Row:
    """DNS discovery is what is tested: Prometheus' targets are exactly DNS's answer; a removed
    record takes its target away (and nginx's traffic) while the process still runs; it comes back."""
    row = Row("DNS discovery self-check", stack.name,
              "remove one replica's A record (the process keeps running), then add it back",
              expect_text="targets = DNS's answer; the target and nginx's traffic follow the record")
    t0 = time.monotonic()
    i = len(REPLICA_IPS) - 1
    name, ip = stack.replica_name(i), REPLICA_IPS[i]
    instance = f"{ip}:{METRICS_PORT}"

    def served() -> float:
        text = http("GET", f"http://{ip}:{METRICS_PORT}/metrics")[1].decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("http_requests_total{"))

    stack.dns.remove(name)
    dns_answer = {f"{a}:{METRICS_PORT}" for a in dig(SERVICE)[1]}
    gone = wait_until(lambda: instance not in stack.targets(JOB), 40)
    if gone is None:
        row.failures.append(f"{instance} still a target 40s after its record was removed")
    else:
        row.measured.append({"alert": "target gone after the record was removed", "fire_s": round(gone, 1)})
        targets = stack.targets(JOB)
        if targets != dns_answer:
            row.failures.append(f"targets {sorted(targets)} != DNS {sorted(dns_answer)}")
    before = served()
    time.sleep(10)  # nginx caches the answer 5s (`resolver ... valid=5s`)
    extra = served() - before
    row.notes.append(f"{name} served {extra:.0f} requests in 10s while out of DNS")
    if extra > 0:
        row.failures.append(f"nginx still sent {extra:.0f} requests to {name} after its record went")
    t_add = time.monotonic()
    stack.dns.add(name, SERVICE, ip)
    back = wait_until(lambda: instance in stack.targets(JOB), 40)
    if back is None:
        row.failures.append(f"{instance} not a target again 40s after its record came back")
    else:
        row.measured.append({"alert": "target back after the record was added", "fire_s": round(back, 1)})
    row.seconds = round(time.monotonic() - t0, 1)
    row.users = traffic.window(t0, time.monotonic())
    _ = t_add
    log(f"--- DNS self-check: {'PASS' if row.passed else 'FAIL'}" + "".join(f"\n      {f}" for f in row.failures))
    return row


def steady_state(stack: Stack, traffic: Traffic, seconds: float) -> Row:
    row = Row("steady state", stack.name, f"{seconds:.0f}s of clean traffic through lb, no fault",
              expect_text="nothing fires, no notification, users see no 5xx")
    t0 = time.monotonic()
    log(f"--- steady state: {seconds:.0f}s of traffic, nothing may fire")
    time.sleep(seconds)
    w = stack.watcher
    firing = sorted({c.alertname for c in w.changes if c.source == "prometheus" and c.state == "firing"})
    delivered = w.delivered(status="firing")
    if firing:
        row.failures.append(f"firing in Prometheus: {', '.join(firing)}")
    if delivered:
        row.failures.append("notifications: " + ", ".join(sorted({a.alertname for _, a in delivered})))
    pending = sorted({c.alertname for c in w.changes if c.source == "prometheus" and c.state == "pending"
                      and c.t > t0 + 30})
    if pending:
        row.notes.append(f"pending (not firing): {', '.join(pending)}")
    row.users = traffic.window(t0, time.monotonic())
    bad = {s: n for s, n in row.users["statuses"].items() if s.startswith("5") or s == "0"}
    if bad:
        row.failures.append(f"users saw errors with no fault: {bad}")
    row.seconds = round(time.monotonic() - t0, 1)
    log(f"--- steady state: {'PASS' if row.passed else 'FAIL'}" + "".join(f"\n      {f}" for f in row.failures))
    return row


def recovery(stack: Stack, rows: list[Row], scenarios: list[Scenario]) -> Row:
    """Every alert delivered in this stack paged once: firing, then at most one resolved; never a
    resolve followed by a new page. Alerts whose resolution the suite waits for did resolve."""
    row = Row("recovery", stack.name, "every fault undone",
              expect_text="each alert paged once; resolved once where waited for; never paged again")
    seqs = episodes(stack.watcher.notifications)
    waited = {a.name for s in scenarios for a in s.expect if a.resolve_within is not None}
    counts: dict[str, dict[str, int]] = {}
    for key, seq in sorted(seqs.items()):
        alertname = key.split("/", 1)[0]
        c = counts.setdefault(alertname, {"fired": 0, "resolved": 0})
        c["fired"] += seq.count("firing")
        c["resolved"] += seq.count("resolved")
        if seq.count("firing") > 1:
            row.failures.append(f"{alertname} paged again after it resolved: {' -> '.join(seq)}")
        if alertname in waited and seq[-1] != "resolved":
            row.failures.append(f"{alertname} still firing at the end")
    row.measured = [{"alert": k, **v} for k, v in counts.items()]
    row.delivered = [f"{k}: fired {v['fired']}, resolved {v['resolved']}" for k, v in counts.items()]
    still = sorted({k.split("/", 1)[0] for k, s in seqs.items() if s[-1] == "firing"} - waited)
    if still:
        row.notes.append(f"still firing, resolution not waited for: {', '.join(still)}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds this stack may run")
    parser.add_argument("--outer-ns", required=True, help="the caller's mnt,net namespace ids")
    parser.add_argument("--as-root", action="store_true",
                        help="run every service as root (the images' users cannot reach the files)")
    parser.add_argument("--override", action="append", default=[],
                        help="DEVELOPMENT ONLY: PATH=HOSTPATH replaces a repository path "
                             "(e.g. monitoring/alertmanager=/some/dir); the run then fails")
    args = parser.parse_args()
    deadline = START + args.deadline
    stack_dir = args.workdir.resolve()
    stack_dir.mkdir(parents=True, exist_ok=True)
    enter_namespaces(stack_dir, args.outer_ns)
    overrides = {os.path.normpath(k): Path(v) for k, v in (o.split("=", 1) for o in args.override)}

    def on_signal(signum, _frame):
        raise SystemExit(f"stack {args.name}: signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    scenarios = scenarios_of(args.name)
    stack = Stack(args.name, stack_dir, args.binary, overrides)
    stack.as_root = args.as_root
    rows: list[Row] = []
    traffic = None
    error = None
    try:
        if overrides:
            stack.check(False, "the repository's files are used", f"development overrides: {args.override}")
        stack.dns.start(as_root=stack.as_root)
        stack.check(wait_until(lambda: dig("localhost-probe")[0] == "NXDOMAIN", 5, 0.1) is not None,
                    f"dnsmasq answers on {DNS_IP}:53 (an unknown name is NXDOMAIN, not REFUSED or forwarded)",
                    stack.procs.tail("dnsmasq"))
        for i in range(len(REPLICA_IPS)):
            stack.start_replica(i)
        status, answer = dig(SERVICE)
        stack.check(answer == sorted(REPLICA_IPS), f"DNS answers {SERVICE} with one A record per replica",
                    f"{status} {answer}")
        stack.start_nginx()
        stack.nginx_note = stack.nginx_change
        stack.start_receiver()
        stack.start_alertmanager()
        stack.start_blackbox()
        stack.start_prometheus(copy_config=any(s.action in ("broken_rule", "bad_reload") for s in scenarios))
        stack.watcher.start()
        threshold = yaml.safe_load(SLO_FILE.read_text())["slos"]["latency"]["threshold_seconds"]
        traffic = Traffic(stack.lb, TRAFFIC_RPS, max_seconds=args.deadline, slow_seconds=threshold)
        traffic.start()
        want = {f"{ip}:{METRICS_PORT}" for ip in dig(SERVICE)[1]}
        took = wait_until(lambda: stack.targets(JOB) == want, 30)
        stack.check(took is not None, f"Prometheus' {JOB} targets are exactly DNS's answer",
                    f"targets {sorted(stack.targets(JOB))}, DNS {sorted(want)}")
        names = {name: socket.gethostbyname(name) for name in ("lb", "localhost")}
        stack.check(names == {"lb": IPS["lb"], "localhost": "127.0.0.1"},
                    "glibc resolves lb through 127.0.0.11 and localhost through /etc/hosts", str(names))
        down = wait_until(lambda: not stack.targets_down(), 45)
        stack.check(down is not None, "every target but Grafana's (not run here) is up: localhost:9090, "
                    "alertmanager:9093, the probe through lb:4000, the replicas", str(stack.targets_down()))
        runner = Runner(stack, traffic, deadline)
        runner.loaded = stack.loaded_alerts()
        if args.name == "replicas":
            rows.append(dns_self_check(stack, traffic))
        rows.append(steady_state(stack, traffic, warmup_seconds(args.name)))
        for sc in scenarios:
            rows.append(runner.run(sc))
        rows.append(recovery(stack, rows, scenarios))
    except BaseException as e:  # noqa: BLE001 - a crash or a signal still writes its result
        error = f"{type(e).__name__}: {e}"
        log(f"stack {args.name} stopped: {error}"
            + ("" if isinstance(e, SystemExit) else f"\n{traceback.format_exc()}"))
        for name in list(stack.procs.procs):
            tail = stack.procs.tail(name, 5)
            if tail:
                log(f"--- last lines of {name}.log\n{tail}")
    finally:
        if traffic is not None:
            traffic.stop()
        stack.stop_all()
    result = {
        "stack": args.name,
        "error": error,
        "setup": stack.setup,
        "rows": [{**asdict(r), "passed": r.passed} for r in rows],
        "notifications": [{"t": round(n.t - START, 1), "receiver": n.receiver, "status": n.status,
                           "alerts": [[a.alertname, a.status] for a in n.alerts]}
                          for n in stack.watcher.notifications],
        "changes": [{"t": round(c.t - START, 1), "source": c.source, "alert": c.alertname, "state": c.state,
                     "labels": c.key} for c in stack.watcher.changes],
        "traffic": {"sent": len(traffic.records) if traffic else 0, "dropped": traffic.dropped if traffic else 0},
        "nginx_derivation": getattr(stack, "nginx_change", None),
        "seconds": round(time.monotonic() - START, 1),
    }
    (stack_dir / "result.json").write_text(json.dumps(result, indent=1))
    ok = error is None and all(c["ok"] for c in stack.setup) and all(r.passed for r in rows)
    log(f"stack {args.name}: {'PASS' if ok else 'FAIL'} in {time.monotonic() - START:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
