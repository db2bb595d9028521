#!/usr/bin/env python3
"""What the Prometheus Operator would make of the chart, on a real Prometheus (issue 12).

    operator_e2e.py --binary BIN [--prometheus BIN] [--helm BIN] [--workdir DIR]

No cluster and no Operator can run here, so this test does their part by hand and lets the real
Prometheus and the real service do the rest:

1. Renders the chart with `helm template` for every Argo CD Application in deploy/argocd/ (its
   release name, namespace and values files: staging and production), as Argo CD renders it.
2. Rewrites `app.kubernetes.io/instance` on every rendered top-level object to the Application's
   name, as Argo CD's default label tracking does (pod templates keep theirs).
3. Selects the ServiceMonitors and PrometheusRules the way kube-prometheus-stack's Prometheus does
   by default (`release: kube-prometheus-stack`; no namespace enforcement), and turns each
   ServiceMonitor endpoint into the scrape job the Operator generates (its
   generateServiceMonitorConfig in pkg/prometheus/promcfg.go): job name
   `serviceMonitor/<namespace>/<name>/<i>`, the selector as keep relabelings on
   `__meta_kubernetes_service_label_*`, the port filter, the `namespace`, `service`, `pod`,
   `container` target labels, `job` from the Service's name (or its jobLabel label), `endpoint`,
   then the endpoint's own relabelings and metricRelabelings. Each PrometheusRule becomes one rule
   file, `<namespace>-<name>-<uid>.yaml`, as the Operator writes them (pkg/prometheus/rules.go).
4. Runs real service binaries as each namespace's pods, on their own loopback addresses with the
   rendered container ports and settings, and Prometheus with the generated configuration.
5. Asserts: both namespaces' targets are up with the deterministic job label (the service's
   name) and their namespace; recording rules and SLO series exist per namespace and do not mix
   (errors injected in staging's pods through /faults leave production's ratios at 0); the
   staging fast-burn page is for staging only; every production pod gone, staging up:
   BackendReplicaLost fires for production only, and nothing of that kind for staging.

What differs from a cluster, on purpose:
- Kubernetes discovery is replaced by file discovery: each namespace's endpoints are written as
  file_sd targets carrying the `__meta_kubernetes_*` labels the `endpoints` role gives (Service
  labels and label-presence flags, endpoint port name, pod name, container, phase...). The
  relabeling that turns them into target labels is the Operator's, unchanged: that is what this
  test checks, with the Service labels Argo CD really leaves on the Service.
- The scrape and evaluation intervals are 5 s instead of the ServiceMonitor's 30 s and the
  cluster's 30 s, to keep the test under about 4 minutes. The rules' windows and `for:` are
  unchanged, so the alerts' expressions are evaluated live and BackendReplicaLost is waited for
  through its `for: 1m`.

Prints one line per check, a `RESULT passed=N failed=M` line, and exits 1 on any failure. Every
process it starts is stopped again by PID; every wait has a deadline. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICE = tomllib.loads((ROOT / "app" / "Cargo.toml").read_text())["package"]["name"]
CHART = ROOT / "deploy" / "charts" / SERVICE
ARGOCD = ROOT / "deploy" / "argocd"
# Its alerts are named in CamelCase after it (scripts/monitoring/common.py, ALERT_PREFIX).
ALERT_PREFIX = "".join(part.capitalize() for part in SERVICE.split("-"))
LOST_ALERT = f"{ALERT_PREFIX}ReplicaLost"
REPLICA_ALERTS = {f"{ALERT_PREFIX}Down", LOST_ALERT, f"{ALERT_PREFIX}Absent"}

# kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules labelled
# `release: <its Helm release>` (serviceMonitorSelector / ruleSelector defaults); the environments'
# values set this release name.
PROMETHEUS_SELECTOR = {"release": "kube-prometheus-stack"}
INSTANCE_LABEL = "app.kubernetes.io/instance"  # what Argo CD's label tracking rewrites
PODS_PER_NAMESPACE = 2
# Differs from production (30 s) on purpose, see the docstring.
INTERVAL = "5s"
TIMEOUT = "4s"

DATA_DEADLINE = 90  # seconds for targets and recorded series to appear
ALERT_DEADLINE = 150  # seconds for BackendReplicaLost to fire: discovery, rules, `for: 1m`


# --------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def http(method: str, url: str, body: bytes | None = None, timeout: float = 3.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def query(prom: str, expr: str) -> list[dict]:
    status, body = http("GET", f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10)
    if status != 200:
        raise RuntimeError(f"query failed ({status}): {expr}: {body[:300]!r}")
    return json.loads(body)["data"]["result"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (SO_REUSEADDR, as the service binds: a previous run's
    connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen()
        except OSError:
            return False
    return True


def wait_until(seconds: float, what, interval: float = 1.0):
    """Polls what() until it returns something truthy or the deadline passes; returns the last value."""
    deadline = time.monotonic() + seconds
    value = None
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(interval)
    return value


def sanitize(name: str) -> str:
    """A Kubernetes label name as a Prometheus label name (the Operator's sanitizeLabelName)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


# --------------------------------------------------------------------------- Argo CD and Helm
def applications() -> list[dict]:
    """The Argo CD Applications of deploy/argocd/: name, namespace, release and values files."""
    apps = []
    for path in sorted(ARGOCD.glob("application-*.yaml")):
        app = yaml.safe_load(path.read_text())
        # One source, or several (Argo CD >= 2.6): the chart's, and `ref` sources whose files the
        # chart's valueFiles name as `$<ref>/<path>`. Every source is this repository: its working
        # tree stands for the revisions they pin.
        sources = app["spec"].get("sources") or [app["spec"]["source"]]
        chart = next(s for s in sources if s.get("path"))
        refs = {s["ref"] for s in sources if s.get("ref")}
        helm = chart.get("helm", {})
        values = []
        for v in helm.get("valueFiles", []):
            m = re.fullmatch(r"\$([\w-]+)/(.+)", v)
            if m and m.group(1) in refs:
                values.append(ROOT / m.group(2))
            else:
                values.append(ROOT / chart["path"] / v)
        apps.append({
            "name": app["metadata"]["name"],
            "namespace": app["spec"]["destination"]["namespace"],
            "release": helm.get("releaseName", app["metadata"]["name"]),
            "values": values,
            "path": chart["path"],
        })
    return apps


def render(helm: str, app: dict) -> list[dict]:
    """`helm template` as Argo CD runs it, then Argo CD's label tracking on top-level objects."""
    args = [helm, "template", app["release"], str(ROOT / app["path"]), "--namespace", app["namespace"]]
    for values in app["values"]:
        args += ["-f", str(values)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
    objects = [o for o in yaml.safe_load_all(out) if o]
    for obj in objects:
        # Argo CD (label tracking, its default before 3.0) sets app.kubernetes.io/instance on every
        # object it applies to the Application's name; pod templates keep the chart's value.
        obj.setdefault("metadata", {}).setdefault("labels", {})[INSTANCE_LABEL] = app["name"]
        obj["metadata"].setdefault("namespace", app["namespace"])
    return objects


def selected(obj: dict) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in PROMETHEUS_SELECTOR.items())


# ------------------------------------------------------------------------ the Operator's output
def relabel(rc: dict) -> dict:
    """A ServiceMonitor RelabelConfig (camelCase) as Prometheus configuration (generateRelabelConfig)."""
    keys = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
            "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}
    out = {}
    for k, v in rc.items():
        if k not in keys:
            raise ValueError(f"unknown relabeling key {k!r} in {rc}")
        out[keys[k]] = v.lower() if k == "action" else v
    return out


def scrape_config(sm: dict, i: int, ep: dict, sd_file: Path) -> dict:
    """The scrape job the Operator generates for endpoint i of ServiceMonitor sm (role endpoints),
    after pkg/prometheus/promcfg.go generateServiceMonitorConfig; discovery is the file sd_file."""
    ns, name, spec = sm["metadata"]["namespace"], sm["metadata"]["name"], sm["spec"]
    rcs: list[dict] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    for k in sorted((spec.get("selector") or {}).get("matchLabels") or {}):
        v = spec["selector"]["matchLabels"][k]
        rcs.append({"action": "keep", "regex": f"({v});true",
                    "source_labels": [f"__meta_kubernetes_service_label_{sanitize(k)}",
                                      f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"]})
    for exp in (spec.get("selector") or {}).get("matchExpressions") or []:
        key, op = sanitize(exp["key"]), exp["operator"]
        both = [f"__meta_kubernetes_service_label_{key}", f"__meta_kubernetes_service_labelpresent_{key}"]
        present = [f"__meta_kubernetes_service_labelpresent_{key}"]
        rcs.append({
            "In": {"action": "keep", "source_labels": both, "regex": f"({'|'.join(exp.get('values', []))});true"},
            "NotIn": {"action": "drop", "source_labels": both, "regex": f"({'|'.join(exp.get('values', []))});true"},
            "Exists": {"action": "keep", "source_labels": present, "regex": "true"},
            "DoesNotExist": {"action": "drop", "source_labels": present, "regex": "true"},
        }[op])
    if ep.get("port"):
        rcs.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": ep["port"]})
    elif ep.get("targetPort") is not None:
        tp = ep["targetPort"]
        meta = "__meta_kubernetes_pod_container_port_" + ("number" if isinstance(tp, int) else "name")
        rcs.append({"action": "keep", "source_labels": [meta], "regex": str(tp)})
    kind_name = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
    rcs += [
        {"source_labels": kind_name, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"},
        {"source_labels": kind_name, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    if ep.get("filterRunning", True):
        rcs.append({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"})
    for label in spec.get("targetLabels") or []:
        rcs.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(label)}"],
                    "target_label": sanitize(label), "regex": "(.+)", "replacement": "${1}"})
    for label in spec.get("podTargetLabels") or []:
        rcs.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(label)}"],
                    "target_label": sanitize(label), "regex": "(.+)", "replacement": "${1}"})
    rcs.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"})
    if spec.get("jobLabel"):
        rcs.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(spec['jobLabel'])}"],
                    "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    if ep.get("port"):
        rcs.append({"target_label": "endpoint", "replacement": ep["port"]})
    elif ep.get("targetPort") is not None:
        rcs.append({"target_label": "endpoint", "replacement": str(ep["targetPort"])})
    rcs += [relabel(r) for r in ep.get("relabelings") or []]
    # Sharding, one shard: the config reloader expands $(SHARD) to 0.
    rcs += [{"source_labels": ["__address__"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"},
            {"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"}]
    job = {
        "job_name": f"serviceMonitor/{ns}/{name}/{i}",
        "honor_labels": bool(ep.get("honorLabels", False)),
        # The Operator writes kubernetes_sd_configs [{role: endpoints, namespaces: {names: [ns]}}]:
        # replaced by this namespace's endpoints as a file (see the docstring).
        "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": INTERVAL}],
        # ep.interval / ep.scrapeTimeout in a cluster; shortened here (see the docstring).
        "scrape_interval": INTERVAL,
        "scrape_timeout": TIMEOUT,
        "relabel_configs": rcs,
    }
    if ep.get("path"):
        job["metrics_path"] = ep["path"]
    if ep.get("scheme"):
        job["scheme"] = ep["scheme"]
    if ep.get("metricRelabelings"):
        job["metric_relabel_configs"] = [relabel(r) for r in ep["metricRelabelings"]]
    return job


def endpoints_targets(service: dict, deployment: dict, pods: list[dict]) -> list[dict]:
    """The targets the `endpoints` role of kubernetes_sd would give for service, one per pod
    address and Service port, with the meta labels the Operator's relabeling reads."""
    svc_labels = service["metadata"].get("labels") or {}
    pod_template = deployment["spec"]["template"]
    container = pod_template["spec"]["containers"][0]
    container_ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    groups = []
    for pod in pods:
        for port in service["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            number = container_ports[target_port] if isinstance(target_port, str) else target_port
            labels = {
                "__meta_kubernetes_namespace": service["metadata"]["namespace"],
                "__meta_kubernetes_service_name": service["metadata"]["name"],
                "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                "__meta_kubernetes_endpoint_ready": "true",
                "__meta_kubernetes_endpoint_address_target_kind": "Pod",
                "__meta_kubernetes_endpoint_address_target_name": pod["name"],
                "__meta_kubernetes_pod_name": pod["name"],
                "__meta_kubernetes_pod_ip": pod["ip"],
                "__meta_kubernetes_pod_ready": "true",
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_port_name": target_port if isinstance(target_port, str) else "",
                "__meta_kubernetes_pod_container_port_number": str(number),
                "__meta_kubernetes_pod_container_port_protocol": "TCP",
            }
            for k, v in svc_labels.items():
                labels[f"__meta_kubernetes_service_label_{sanitize(k)}"] = str(v)
                labels[f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"] = "true"
            for k, v in (pod_template["metadata"].get("labels") or {}).items():
                labels[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = str(v)
                labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
            groups.append({"targets": [f"{pod['ip']}:{number}"], "labels": labels})
    return groups


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # file_sd must never read a half-written file


# ------------------------------------------------------------------------------------- the run
class Processes:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.kill()  # SIGKILL, by PID: a crashed pod
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.terminate()
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            del self.procs[name]


def run(args: argparse.Namespace, c: Checks, workdir: Path, procs: Processes) -> None:
    apps = applications()
    c.check(len(apps) >= 2, f"Argo CD has two Applications or more ({[a['name'] for a in apps]})")
    namespaces = [a["namespace"] for a in apps]
    c.check(len(set(namespaces)) == len(namespaces), "each Application has its own namespace", str(namespaces))

    rules_dir = workdir / "rules"
    rules_dir.mkdir()
    scrape_configs, envs, all_rules = [], [], []
    for n, app in enumerate(apps):
        ns = app["namespace"]
        objects = render(args.helm, app)
        by_kind: dict[str, list[dict]] = {}
        for obj in objects:
            by_kind.setdefault(obj["kind"], []).append(obj)
        monitors = [o for o in by_kind.get("ServiceMonitor", []) if selected(o)]
        rules = [o for o in by_kind.get("PrometheusRule", []) if selected(o)]
        c.check(len(monitors) == 1, f"{ns}: one ServiceMonitor that kube-prometheus-stack selects "
                f"({PROMETHEUS_SELECTOR})", str([o["metadata"].get("labels") for o in by_kind.get("ServiceMonitor", [])]))
        all_rules.extend((ns, rule) for rule in rules)
        service = by_kind["Service"][0]
        deployment = by_kind["Deployment"][0]
        settings = next((o.get("data") or {} for o in by_kind.get("ConfigMap", [])
                         if any(k.startswith("APP__") for k in (o.get("data") or {}))), {})
        c.check(service["metadata"]["labels"].get(INSTANCE_LABEL) == app["name"],
                f"{ns}: the Service carries {INSTANCE_LABEL}={app['name']}, as Argo CD's label tracking leaves it")

        # One rule file per PrometheusRule, named as the Operator names it; no namespace enforcement
        # (kube-prometheus-stack's default): both namespaces' copies are loaded as they are.
        for rule in rules:
            uid = f"00000000-0000-4000-8000-{n:04d}{len(list(rules_dir.iterdir())):08d}"
            path = rules_dir / f"{ns}-{rule['metadata']['name']}-{uid}.yaml"
            path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))

        # The pods: real binaries on their own loopback addresses, with the rendered ports and settings.
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        pods = []
        for i in range(PODS_PER_NAMESPACE):
            ip = f"127.0.{10 * (n + 1)}.{i + 1}"
            pod = {"name": f"{deployment['metadata']['name']}-6d4cf56db{n}-p{i}", "ip": ip, "namespace": ns,
                   "api": f"http://{ip}:{ports['http']}", "metrics": f"http://{ip}:{ports['metrics']}"}
            for port in ports.values():
                if not port_free(ip, port):
                    raise RuntimeError(f"{ip}:{port} is taken: cannot run pod {pod['name']} there")
            env = {"PATH": os.environ.get("PATH", ""), **{k: str(v) for k, v in settings.items()},
                   "APP__SERVER__HOST": ip, "APP__SERVER__PORT": str(ports["http"]),
                   "APP__METRICS__HOST": ip, "APP__METRICS__PORT": str(ports["metrics"]),
                   "APP__LOG__LEVEL": "warn", "APP__SHUTDOWN__DRAIN_DELAY": "0s"}
            procs.start(f"pod-{pod['name']}", [args.binary], env=env)
            pods.append(pod)
        sd_file = workdir / f"endpoints-{ns}.json"
        write_json(sd_file, endpoints_targets(service, deployment, pods))
        for monitor in monitors:
            for i, ep in enumerate(monitor["spec"]["endpoints"]):
                scrape_configs.append(scrape_config(monitor, i, ep, sd_file))
        envs.append({"app": app, "ns": ns, "pods": pods, "service": service, "deployment": deployment,
                     "sd_file": sd_file, "settings": settings})

    c.check(len({ns for ns, _ in all_rules}) == 1,
            "the rules ship from one namespace of the cluster, and kube-prometheus-stack selects them",
            str(sorted({ns for ns, _ in all_rules})))
    config = {
        # 5 s, not the cluster's 30 s: see the docstring.
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL, "scrape_timeout": TIMEOUT},
        "rule_files": [str(rules_dir / "*.yaml")],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run([args.promtool, "check", "config", str(workdir / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    c.check(check.returncode == 0, "promtool accepts the generated configuration and rule files",
            (check.stdout + check.stderr)[-800:])

    for env in envs:
        for pod in env["pods"]:
            ok = wait_until(15, lambda p=pod: http("GET", p["api"] + "/api/v1/health")[0] == 200, 0.2)
            c.check(bool(ok), f"{env['ns']}: pod {pod['name']} answers on {pod['api']}")

    prom_port = free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    procs.start("prometheus", [args.prometheus, f"--config.file={workdir / 'prometheus.yml'}",
                               f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"])
    if not c.check(bool(wait_until(30, lambda: http("GET", prom + "/-/ready")[0] == 200, 0.5)), "Prometheus is ready"):
        return
    log(f"Prometheus on {prom}, {len(scrape_configs)} scrape jobs, {len(list(rules_dir.iterdir()))} rule files")

    # --- rule files: one per PrometheusRule, both namespaces' copies loaded
    status, body = http("GET", prom + "/api/v1/rules")
    groups = json.loads(body)["data"]["groups"] if status == 200 else []
    files = {g["file"] for g in groups}
    c.check(files == {str(p) for p in rules_dir.iterdir()}, f"Prometheus loaded every rule file ({len(files)})")
    # The rules group by namespace: one copy serves every namespace. Two copies (both
    # environments shipping them) ran every rule twice and wrote every recorded series twice.
    twice = sorted({g["name"] for g in groups if sum(h["name"] == g["name"] for h in groups) > 1})
    c.check(not twice, "each rule group is loaded once", ", ".join(twice))

    # --- targets: every pod's metrics endpoint, up, with the deterministic job and its namespace
    def targets() -> list[dict]:
        st, b = http("GET", prom + "/api/v1/targets?state=active")
        return json.loads(b)["data"]["activeTargets"] if st == 200 else []

    want = {(e["ns"], p["name"]) for e in envs for p in e["pods"]}
    wait_until(DATA_DEADLINE, lambda: {(t["labels"].get("namespace"), t["labels"].get("pod"))
                                       for t in targets() if t["health"] == "up"} >= want)
    active = targets()
    for env in envs:
        ns = env["ns"]
        mine = [t for t in active if t["labels"].get("namespace") == ns]
        c.check(len(mine) == PODS_PER_NAMESPACE,
                f"{ns}: {PODS_PER_NAMESPACE} targets (the metrics port of each pod; the http port is "
                "filtered out by the endpoint's port)", str([t["labels"] for t in mine]))
        for t in mine:
            lab = t["labels"]
            c.check(t["health"] == "up", f"{ns}: {lab.get('pod')} is scraped (up)", t.get("lastError", ""))
            c.check(lab.get("job") == SERVICE, f"{ns}: {lab.get('pod')} has job={SERVICE}, whatever the "
                    "release or Argo CD's labels", str(lab))
            c.check(t["scrapePool"].startswith(f"serviceMonitor/{ns}/"), f"{ns}: scrape job serviceMonitor/{ns}/<name>/0",
                    t["scrapePool"])
            c.check(lab.get("service") == env["service"]["metadata"]["name"] and lab.get("endpoint") == "metrics"
                    and lab.get("container") and lab.get("instance", "").startswith("127.0."),
                    f"{ns}: {lab.get('pod')} has the Operator's service, endpoint, container and instance labels", str(lab))
    if not c.check(len(active) == len(want), "no other target", str(len(active))):
        return

    # --- traffic, and errors injected into staging's pods only
    staging, production = envs[0], envs[1]
    for env in envs:
        if "staging" in env["ns"]:
            staging = env
        elif "production" in env["ns"]:
            production = env
    status = 0
    for pod in staging["pods"]:
        status, _ = http("PUT", pod["metrics"] + "/faults",
                         body=json.dumps({"error_ratio": 0.5, "error_statuses": [500]}).encode())
        c.check(status == 200, f"{staging['ns']}: faults on in {pod['name']} (PUT /faults on its metrics port)", str(status))

    def traffic(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for env in envs:
                for pod in env["pods"]:
                    for path in ("/api/v1/info", "/api/v1/health", "/no/such/route"):
                        http("GET", pod["api"] + path, timeout=2)
            time.sleep(0.05)

    log("traffic for 20 s, staging's pods failing half of /api/v1/info")
    traffic(20)

    def value(expr: str) -> dict[str, float]:
        return {r["metric"].get("namespace", ""): float(r["value"][1]) for r in query(prom, expr)}

    sel = f'job="{SERVICE}"'
    recorded = {
        "requests per namespace": f"job:http_requests:rate5m{{{sel}}}",
        "5xx ratio per namespace": f"job:http_requests_error_ratio:rate5m{{{sel}}}",
        "availability SLI (5m) per namespace": f'slo:sli_error:ratio_rate5m{{{sel}, slo="availability"}}',
        "latency SLI (5m) per namespace": f'slo:sli_error:ratio_rate5m{{{sel}, slo="latency"}}',
        "replicas discovered per namespace": f"job:up:count{{{sel}}}",
    }
    both = {staging["ns"], production["ns"]}

    def all_recorded() -> bool:
        traffic(2)
        return all(set(value(e)) == both for e in recorded.values())

    wait_until(DATA_DEADLINE, all_recorded, 0.1)
    for what, expr in recorded.items():
        got = value(expr)
        c.check(set(got) == both, f"{what}: one series per namespace, none summed across ({expr})", str(got))
    ratio = value(recorded["5xx ratio per namespace"])
    c.check(ratio.get(staging["ns"], 0) > 0.05, f"{staging['ns']}: the injected errors show in its 5xx ratio", str(ratio))
    c.check(ratio.get(production["ns"], -1) == 0, f"{production['ns']}: its 5xx ratio stays 0", str(ratio))
    sli = value(recorded["availability SLI (5m) per namespace"])
    c.check(sli.get(staging["ns"], 0) > 0.05 and sli.get(production["ns"], -1) == 0,
            "the availability SLI burns in staging only", str(sli))
    count = value(recorded["replicas discovered per namespace"])
    c.check(count == {ns: PODS_PER_NAMESPACE for ns in both}, "replicas discovered: each namespace its own", str(count))

    # The fast-burn page's expression, evaluated live from the loaded rule: staging only.
    rules_by_name = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    burn = rules_by_name["AvailabilityBudgetBurnFast"]["query"]
    fired = value(burn)
    c.check(set(fired) == {staging["ns"]}, "AvailabilityBudgetBurnFast's expression holds for staging only", str(fired))

    # --- every production pod gone (deleted, not replaced), staging up
    for pod in staging["pods"]:
        http("DELETE", pod["metrics"] + "/faults")
    log(f"killing every pod of {production['ns']} (SIGKILL) and removing its endpoints")
    t0 = time.monotonic()
    for pod in production["pods"]:
        procs.kill(f"pod-{pod['name']}")
    write_json(production["sd_file"], [])

    lost = rules_by_name[LOST_ALERT]["query"]

    def lost_firing() -> list[dict]:
        traffic(1)
        st, b = http("GET", prom + "/api/v1/alerts")
        alerts = json.loads(b)["data"]["alerts"] if st == 200 else []
        return [a for a in alerts if a["labels"].get("alertname") == LOST_ALERT and a["state"] == "firing"]

    held = wait_until(30, lambda: set(value(lost)) == {production["ns"]}, 1)
    c.check(bool(held), f"{LOST_ALERT}'s expression holds for {production['ns']} only, "
            f"{time.monotonic() - t0:.0f} s after the pods went", str(value(lost)))
    firing = wait_until(ALERT_DEADLINE, lost_firing, 1) or []
    after = time.monotonic() - t0
    c.check({a["labels"].get("namespace") for a in firing} == {production["ns"]},
            f"{LOST_ALERT} fires with namespace={production['ns']} only, {after:.0f} s after its pods went "
            "(evaluation, `for: 1m`)", json.dumps([a["labels"] for a in firing]))
    count = value(recorded["replicas discovered per namespace"])
    c.check(count.get(production["ns"]) == 0 and count.get(staging["ns"]) == PODS_PER_NAMESPACE,
            f"replicas discovered: 0 in {production['ns']} (not \"no data\"), {PODS_PER_NAMESPACE} in {staging['ns']}",
            str(count))
    st, b = http("GET", prom + "/api/v1/alerts")
    alerts = json.loads(b)["data"]["alerts"] if st == 200 else []
    noisy = [a["labels"] for a in alerts if a["labels"].get("alertname") in REPLICA_ALERTS
             and a["labels"].get("namespace") != production["ns"]]
    c.check(not noisy, f"no replica alert (pending or firing) for {staging['ns']}, or without a namespace", str(noisy))
    st, b = http("GET", prom + "/api/v1/rules")
    health = [(r["name"], r.get("lastError")) for g in json.loads(b)["data"]["groups"] for r in g["rules"]
              if r.get("health") == "err"] if st == 200 else [("rules", "unreadable")]
    c.check(not health, "no rule failed to evaluate", str(health[:5]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="the service's binary")
    parser.add_argument("--prometheus", default=shutil.which("prometheus"))
    parser.add_argument("--promtool", default=shutil.which("promtool"))
    parser.add_argument("--helm", default=shutil.which("helm"))
    parser.add_argument("--workdir", help="keeps configuration, rule files and logs here (default: a temporary directory)")
    args = parser.parse_args()
    for tool in ("prometheus", "promtool", "helm"):
        if not getattr(args, tool):
            sys.exit(f"no {tool} binary (install it, or pass --{tool})")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="operator-e2e-"))
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"{workdir} is not empty")
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Processes(workdir)

    def on_signal(signum, _frame):
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    c = Checks()
    started = time.monotonic()
    try:
        run(args, c, workdir, procs)
    except Exception as e:  # a crash is a failed check, with the processes still stopped
        c.check(False, "the test ran to its end", f"{type(e).__name__}: {e}")
    finally:
        procs.stop_all()
    log(f"took {time.monotonic() - started:.0f} s; files and logs in {workdir}")
    print(f"RESULT passed={c.passed} failed={len(c.failed)}", flush=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
