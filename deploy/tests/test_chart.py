#!/usr/bin/env python3
"""Assertions on the rendered chart, the Argo CD objects and the workflows.

    test_chart.py RENDER_DIR
    test_chart.py --settings RENDER_FILE

RENDER_DIR holds the `helm template` outputs scripts/test-deploy.sh made: default.yaml,
all-on.yaml, staging.yaml, production.yaml (the environments) and fixture.yaml (a chart copy
with a fixture dashboard, so the dashboard template is exercised whatever monitoring/ holds).
One function per behaviour; each prints `ok` or `FAIL` with the reason. The last line is
`RESULT passed=N failed=M` for the calling script.

With --settings it prints the APP__ settings of one rendering's ConfigMap as KEY=VALUE, each
ended by a NUL byte, for scripts/test-deploy.sh to start the app with.
"""

import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The service's name, written once in app/Cargo.toml; the chart, its release and objects follow it.
SERVICE = tomllib.loads((ROOT / "app" / "Cargo.toml").read_text())["package"]["name"]
CHART = ROOT / "deploy" / "charts" / SERVICE
ARGOCD = ROOT / "deploy" / "argocd"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
WORKFLOWS = ROOT / ".github" / "workflows"
ENVIRONMENTS = ("staging", "production")
RENDERINGS = ("default", "all-on", *ENVIRONMENTS)

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# --- helpers ---------------------------------------------------------------------------------


def load_docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


class Rendering:
    """The objects of one `helm template` output, with lookups by kind."""

    def __init__(self, name, docs):
        self.name = name
        self.docs = docs

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind):
        found = self.all(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}"
        return found[0]

    def maybe(self, kind):
        found = self.all(kind)
        return found[0] if found else None

    @property
    def deployment(self):
        return self.one("Deployment")

    @property
    def pod_spec(self):
        return self.deployment["spec"]["template"]["spec"]

    @property
    def pod_labels(self):
        return self.deployment["spec"]["template"]["metadata"]["labels"]

    @property
    def container(self):
        """The app's container: the first one; sidecars (the `sidecars` value) come after it."""
        containers = self.pod_spec["containers"]
        assert containers[0]["name"] == SERVICE, f"{self.name}: the first container is {containers[0]['name']}"
        return containers[0]


def app_config(r):
    """The ConfigMap that holds the APP__ settings (not the dashboard ConfigMaps)."""
    maps = [m for m in r.all("ConfigMap") if "APP__SERVER__PORT" in m.get("data", {})]
    assert len(maps) == 1, f"{r.name}: expected one settings ConfigMap"
    return maps[0]["data"]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def duration_ms(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    assert match, f"cannot read duration {text!r}"
    return int(match[1]) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[match[2]]


@functools.cache
def contract():
    return (ROOT / "docs" / "contract.md").read_text()


def contract_ports():
    """{setting: port} from the Ports table of docs/contract.md."""
    ports = {}
    for line in contract().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|\s*`(APP__\w+)`", line)
        if match:
            ports[match[2]] = int(match[1])
    return ports


def contract_endpoint(purpose):
    """The GET path whose Purpose column starts with `purpose` (liveness, readiness)."""
    for line in contract().splitlines():
        match = re.match(r"\|\s*`GET (/\S+)`\s*\|.*\|\s*(\w+)", line)
        if match and match[2] == purpose:
            return match[1]
    raise AssertionError(f"docs/contract.md names no {purpose} endpoint")


def contract_setting_keys():
    keys = set()
    for line in contract().splitlines():
        keys.update(re.findall(r"^\|\s*`(APP__[A-Z_]+)`", line))
    return keys


def all_pod_specs(r):
    """(where, pod spec) for the Deployment and every bare Pod (the helm test pod)."""
    specs = [(f"{r.name}/Deployment", r.pod_spec)]
    specs += [(f"{r.name}/Pod/{p['metadata']['name']}", p["spec"]) for p in r.all("Pod")]
    return specs


@functools.cache
def crd_schema(filename):
    return json.loads((SCHEMAS / filename).read_text())


def validate(doc, schema_file):
    jsonschema.validate(doc, crd_schema(schema_file), cls=jsonschema.Draft202012Validator)


def values_defaults():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def workflow(name):
    return yaml.safe_load((WORKFLOWS / name).read_text())


def on_block(wf):
    # PyYAML reads the bare key `on` as the boolean True.
    return wf.get("on", wf.get(True))


@functools.cache
def helm_render(release, *args):
    """A `helm template` of the chart beyond the four renderings scripts/test-deploy.sh makes:
    another release name, nameOverride and the like. Returns a Rendering."""
    helm = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    out = subprocess.run([helm, "template", release, CHART, "--namespace", f"{SERVICE}-test", *args],
                         check=True, capture_output=True, text=True).stdout
    return Rendering(f"{release} {' '.join(args)}".strip(), [d for d in yaml.safe_load_all(out) if d])


def env_rendering(env, *args):
    return helm_render(SERVICE, "-f", str(CHART / f"values-{env}.yaml"), *args)


# The label Argo CD writes with label tracking (its default before 3.0): the Application's name.
ARGO_INSTANCE_LABEL = "app.kubernetes.io/instance"


def argo_label_tracking(r, app_name):
    """The objects as Argo CD's label tracking leaves them in the cluster: the instance label of
    every top-level object rewritten to the Application's name. Pod templates keep theirs: Argo CD
    stopped labelling them in v0.11 (SetAppInstanceLabel in argo-cd util/kube/kube.go: "we no
    longer label the pod template sub resources"), so what selects pods is untouched."""
    docs = json.loads(json.dumps(r.docs))
    for d in docs:
        d["metadata"].setdefault("labels", {})[ARGO_INSTANCE_LABEL] = app_name
    return Rendering(f"{r.name} under Argo CD as {app_name}", docs)


def relabel(labels, configs):
    """Prometheus relabeling (replace, keep, drop, labeldrop) of a target's labels, enough to
    follow the ServiceMonitor relabelings the chart renders; the operator's camelCase names."""
    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace").lower()
        regex = re.compile(c.get("regex", "(.*)"))
        value = c.get("separator", ";").join(labels.get(s, "") for s in c.get("sourceLabels", []))
        if action == "replace":
            match = regex.fullmatch(value)
            if match:
                result = match.expand(re.sub(r"\$\{?(\d+)\}?", r"\\\1", c.get("replacement", "$1")))
                if result:
                    labels[c["targetLabel"]] = result
                else:
                    labels.pop(c["targetLabel"], None)
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.fullmatch(k)}
        elif action in ("keep", "drop"):
            if bool(regex.fullmatch(value)) != (action == "keep"):
                return None
        else:
            raise AssertionError(f"relabel action {action} not followed here")
    return labels


def operator_job(service_monitor, service):
    """The job label Prometheus Operator gives the ServiceMonitor's targets: the value of the
    Service label named by jobLabel, else the Service's name; then the endpoint's relabelings,
    which the operator appends after its own."""
    svc_labels = service["metadata"].get("labels", {})
    job_label = service_monitor["spec"].get("jobLabel")
    job = svc_labels.get(job_label) if job_label and svc_labels.get(job_label) else service["metadata"]["name"]
    jobs = set()
    for endpoint in service_monitor["spec"]["endpoints"]:
        labels = relabel({"job": job}, endpoint.get("relabelings", []))
        jobs.add(labels and labels.get("job"))
    return jobs


# --- the chart: replicas, HPA, selectors -----------------------------------------------------


@test
def test_deployment_has_no_replicas_when_the_hpa_is_on(R):
    for r in R.values():
        hpa = r.maybe("HorizontalPodAutoscaler")
        if hpa:
            assert "replicas" not in r.deployment["spec"], f"{r.name}: replicas set next to the HPA"
        else:
            assert "replicas" in r.deployment["spec"], f"{r.name}: no HPA and no replicas"
    assert R["all-on"].maybe("HorizontalPodAutoscaler"), "all-on renders no HPA"
    assert not R["default"].maybe("HorizontalPodAutoscaler"), "the default renders an HPA"


@test
def test_hpa_targets_the_deployment_on_cpu_and_memory_with_behavior(R):
    for r in R.values():
        hpa = r.maybe("HorizontalPodAutoscaler")
        if not hpa:
            continue
        assert hpa["apiVersion"] == "autoscaling/v2", f"{r.name}: HPA {hpa['apiVersion']}"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref == {"apiVersion": "apps/v1", "kind": "Deployment",
                       "name": r.deployment["metadata"]["name"]}, f"{r.name}: scaleTargetRef {ref}"
        resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert resources == {"cpu", "memory"}, f"{r.name}: HPA metrics {resources}"
        assert {"scaleUp", "scaleDown"} <= set(hpa["spec"].get("behavior", {})), f"{r.name}: no behavior"


@test
def test_selectors_match_the_pod_labels(R):
    for r in R.values():
        labels = r.pod_labels
        dep_sel = r.deployment["spec"]["selector"]["matchLabels"]
        assert selects(dep_sel, labels), f"{r.name}: Deployment selector misses the pod labels"
        svc_sel = r.one("Service")["spec"]["selector"]
        assert svc_sel == dep_sel, f"{r.name}: Service selector {svc_sel} != {dep_sel}"
        for kind, path in [("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
                           ("NetworkPolicy", ("spec", "podSelector", "matchLabels"))]:
            for obj in r.all(kind):
                sel = obj
                for key in path:
                    sel = sel[key]
                assert sel == dep_sel, f"{r.name}: {kind} selector {sel} != {dep_sel}"
        for sm in r.all("ServiceMonitor"):
            sel = sm["spec"]["selector"]["matchLabels"]
            assert selects(sel, r.one("Service")["metadata"]["labels"]), f"{r.name}: ServiceMonitor misses the Service"
        affinity = r.pod_spec.get("affinity", {}).get("podAntiAffinity", {})
        terms = [t["podAffinityTerm"] for t in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        terms += affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        terms += r.pod_spec.get("topologySpreadConstraints", [])
        for term in terms:
            assert selects(term["labelSelector"]["matchLabels"], labels), f"{r.name}: spread selector misses the pods"


@test
def test_no_selector_picks_up_the_helm_test_pod(R):
    r = R["default"]
    test_pods = r.all("Pod")
    assert test_pods, "the default renders no helm test pod"
    svc_sel = r.one("Service")["spec"]["selector"]
    for pod in test_pods:
        assert not selects(svc_sel, pod["metadata"]["labels"]), "the Service would route to the test pod"


# --- the chart: ports, probes, lifecycle -----------------------------------------------------


@test
def test_container_ports_match_the_contract(R):
    ports = contract_ports()
    assert ports.get("APP__SERVER__PORT") == 4000 and ports.get("APP__METRICS__PORT") == 9464, ports
    for r in R.values():
        declared = {p["name"]: p["containerPort"] for p in r.container["ports"]}
        assert declared == {"http": ports["APP__SERVER__PORT"], "metrics": ports["APP__METRICS__PORT"]}, \
            f"{r.name}: container ports {declared}"
        config = app_config(r)
        assert int(config["APP__SERVER__PORT"]) == declared["http"], f"{r.name}: API port setting"
        assert int(config["APP__METRICS__PORT"]) == declared["metrics"], f"{r.name}: metrics port setting"


@test
def test_probe_paths_match_the_contract(R):
    liveness, readiness = contract_endpoint("liveness"), contract_endpoint("readiness")
    assert (liveness, readiness) == ("/api/v1/health", "/api/v1/ready")
    for r in R.values():
        c = r.container
        for probe, path in [("startupProbe", liveness), ("livenessProbe", liveness), ("readinessProbe", readiness)]:
            assert probe in c, f"{r.name}: no {probe}"
            get = c[probe]["httpGet"]
            assert get["path"] == path and get["port"] == "http", f"{r.name}: {probe} {get}"


@test
def test_service_speaks_http_on_named_ports_and_has_no_fake_https_port(R):
    for r in R.values():
        ports = r.one("Service")["spec"]["ports"]
        by_name = {p["name"]: p for p in ports}
        assert set(by_name) == {"http", "metrics"}, f"{r.name}: Service ports {set(by_name)}"
        assert by_name["http"]["targetPort"] == "http" and by_name["metrics"]["targetPort"] == "metrics"
        assert all(p["port"] != 443 for p in ports), f"{r.name}: a port 443 that would carry plain HTTP"


@test
def test_termination_grace_exceeds_drain_plus_shutdown_timeout(R):
    for r in R.values():
        config = app_config(r)
        drain = duration_ms(config.get("APP__SHUTDOWN__DRAIN_DELAY", "5s"))
        timeout = duration_ms(config.get("APP__SHUTDOWN__TIMEOUT", "15s"))
        grace = r.pod_spec["terminationGracePeriodSeconds"]
        flush = 3000  # the bound on flushing buffered spans at exit (app/src/telemetry.rs)
        assert grace >= 30 and grace * 1000 > drain + timeout + flush, \
            f"{r.name}: grace {grace}s vs {drain + timeout + flush}ms"


@test
def test_rollout_never_drops_below_desired_and_restarts_on_config_change(R):
    for r in R.values():
        strategy = r.deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0, \
            f"{r.name}: {strategy}"
        checksum = r.deployment["spec"]["template"]["metadata"]["annotations"].get("checksum/config", "")
        assert re.fullmatch(r"[0-9a-f]{64}", checksum), f"{r.name}: no checksum/config annotation"
    assert R["default"].deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != \
        R["production"].deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"], \
        "different settings gave the same checksum"


@test
def test_settings_configmap_holds_only_contract_keys(R):
    known = contract_setting_keys()
    assert "APP__SHUTDOWN__DRAIN_DELAY" in known, "could not read the settings table"
    for r in R.values():
        unknown = set(app_config(r)) - known
        assert not unknown, f"{r.name}: settings the app would reject: {unknown}"


@test
def test_only_production_turns_off_the_host_disclosing_info_endpoint(R):
    # /api/v1/info gives kernel release, hostname and memory to anyone reaching the API.
    for r in R.values():
        enabled = app_config(r).get("APP__INFO__ENABLED")
        expected = "false" if r.name == "production" else "true"
        assert enabled == expected, f"{r.name}: APP__INFO__ENABLED is {enabled!r}, not {expected!r}"


@test
def test_schema_config_keys_are_the_contract_settings_less_the_chart_managed_ones(R):
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = set(schema["properties"]["config"]["properties"])
    managed = {"APP__SERVER__PORT", "APP__METRICS__PORT", "APP__SERVER__HOST", "APP__METRICS__HOST"}
    contract_keys = contract_setting_keys()
    assert keys == contract_keys - managed, \
        f"schema vs contract: missing {contract_keys - managed - keys}, extra {keys - contract_keys}"


# --- the chart: security ---------------------------------------------------------------------


@test
def test_every_pod_runs_restricted(R):
    for r in R.values():
        for where, spec in all_pod_specs(r):
            pod_sc = spec.get("securityContext", {})
            assert spec.get("automountServiceAccountToken") is False, f"{where}: token automounted"
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c.get("securityContext", {})
                run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
                uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
                seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
                assert run_as_non_root is True, f"{where}: runAsNonRoot"
                assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid!r} is not a numeric non-root UID"
                assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
                assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop"
                assert not sc.get("capabilities", {}).get("add"), f"{where}: capabilities.add"
                assert seccomp == "RuntimeDefault", f"{where}: seccompProfile {seccomp}"
                assert c.get("resources", {}).get("limits", {}).get("memory"), f"{where}: no memory limit"


@test
def test_serviceaccount_does_not_automount_its_token(R):
    for r in R.values():
        sa = r.one("ServiceAccount")
        assert sa.get("automountServiceAccountToken") is False, f"{r.name}: ServiceAccount automounts"
        assert r.pod_spec["serviceAccountName"] == sa["metadata"]["name"], f"{r.name}: pods use another SA"


@test
def test_images_are_pinned_never_latest(R):
    for r in R.values():
        for where, spec in all_pod_specs(r):
            for c in spec["containers"] + spec.get("initContainers", []):
                image = c["image"]
                name = image.split("@")[0]
                tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
                assert tag and tag != "latest", f"{where}: image {image} has no immutable tag"
    assert R["default"].container["image"].endswith(":" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    assert "@sha256:" in R["all-on"].container["image"], "a digest is not rendered"


@test
def test_no_object_hard_codes_a_namespace(R):
    for r in R.values():
        for d in r.docs:
            assert "namespace" not in d["metadata"], f"{r.name}: {d['kind']}/{d['metadata']['name']} has a namespace"
    for path in (CHART / "templates").rglob("*"):
        if path.is_file() and path.name != "NOTES.txt":
            assert "namespace:" not in path.read_text(), f"{path.name} writes a namespace"


@test
def test_pods_spread_over_hosts_and_zones(R):
    default = R["default"].pod_spec
    preferred = default["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    required = R["all-on"].pod_spec["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in required, "anti-affinity cannot be made required"
    spread = default["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone", spread


# --- the chart: Ingress ----------------------------------------------------------------------


@test
def test_ingress_routes_api_paths_to_the_http_port_only(R):
    rendered = 0
    for r in R.values():
        for ing in r.all("Ingress"):
            rendered += 1
            assert ing["spec"]["ingressClassName"] == "kong", f"{r.name}: class {ing['spec']['ingressClassName']}"
            metrics_port = r.one("Service")["spec"]["ports"][1]
            for rule in ing["spec"]["rules"]:
                for p in rule["http"]["paths"]:
                    assert p["path"].startswith("/api"), f"{r.name}: Ingress routes {p['path']}"
                    assert "metrics" not in p["path"], f"{r.name}: Ingress routes {p['path']}"
                    port = p["backend"]["service"]["port"]  # the Ingress API's field (rename: keep)
                    assert port.get("name") == "http", f"{r.name}: Ingress backend port {port}"
                    assert port.get("number") != metrics_port["port"], f"{r.name}: Ingress reaches metrics"
            assert ing["spec"].get("tls"), f"{r.name}: Ingress without TLS"
    assert rendered >= 3, "the Ingress is not rendered where expected"


# --- the chart: optional objects -------------------------------------------------------------


@test
def test_defaults_render_only_builtin_kinds(R):
    builtin = {"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}
    for d in R["default"].docs:
        assert d["apiVersion"] in builtin, f"the default needs a CRD: {d['apiVersion']} {d['kind']}"


@test
def test_external_secret_is_v1_opt_in_and_loaded_with_env_from(R):
    assert not R["default"].all("ExternalSecret")
    default_env = R["default"].container["envFrom"]
    assert all("secretRef" not in e for e in default_env), "the default loads a Secret"
    es = R["all-on"].one("ExternalSecret")
    assert es["apiVersion"] == "external-secrets.io/v1", es["apiVersion"]
    env = R["all-on"].container["envFrom"]
    # The chart's ConfigMap, then the Secret (its keys win), then extraEnvFrom.
    assert "configMapRef" in env[0] and env[1].get("secretRef", {}).get("name") == es["spec"]["target"]["name"], \
        f"envFrom {env}: the secret must come right after the ConfigMap"


@test
def test_prometheus_rules_equal_the_monitoring_rule_files(R):
    sources = sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))
    rules = R["all-on"].all("PrometheusRule")
    assert len(rules) == len(sources), f"{len(rules)} PrometheusRules for {len(sources)} rule files"
    by_name = {r["metadata"]["name"]: r for r in rules}
    for src in sources:
        name = f"{SERVICE}-" + src.stem.replace("_", "-").replace(".", "-").lower()
        assert name in by_name, f"no PrometheusRule {name} for {src.name}"
        want = yaml.safe_load(src.read_text())["groups"]
        assert by_name[name]["spec"]["groups"] == want, f"{name} differs from monitoring/prometheus/rules/{src.name}"


@test
def test_dashboard_configmaps_carry_the_sidecar_label_and_the_json(R):
    dashboards = [c for c in R["fixture"].all("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    assert dashboards, "the fixture dashboard rendered no ConfigMap"
    for cm in dashboards:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        for filename, body in cm["data"].items():
            assert filename.endswith(".json")
            json.loads(body)
    sources = sorted((ROOT / "monitoring" / "grafana" / "dashboards").glob("*.json"))
    rendered = {k: v for c in R["all-on"].all("ConfigMap") for k, v in c.get("data", {}).items() if k.endswith(".json")}
    for src in sources:
        assert rendered.get(src.name) == src.read_text().rstrip("\n"), f"dashboard {src.name} differs from monitoring/"


@test
def test_crd_objects_match_their_schemas(R):
    schemas = {
        ("external-secrets.io/v1", "ExternalSecret"): "externalsecret-v1.json",
        ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
        ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
        ("argoproj.io/v1alpha1", "AppProject"): "appproject-v1alpha1.json",
        ("argoproj.io/v1alpha1", "Application"): "application-v1alpha1.json",
    }
    docs = [(r.name, d) for r in R.values() for d in r.docs]
    docs += argocd_docs()
    seen = set()
    for where, d in docs:
        key = (d["apiVersion"], d["kind"])
        if "." in d["apiVersion"].split("/")[0] and not d["apiVersion"].endswith("k8s.io/v1"):
            assert key in schemas, f"{where}: no schema for {key}"
        if key in schemas:
            validate(d, schemas[key])
            seen.add(key)
    assert seen == set(schemas), f"never validated: {set(schemas) - seen}"


@test
def test_crd_schemas_reject_a_broken_object(R):
    def rejected(doc, schema_file):
        try:
            validate(doc, schema_file)
        except jsonschema.ValidationError:
            return True
        return False

    es = json.loads(json.dumps(R["all-on"].one("ExternalSecret")))
    es["apiVersion"] = "external-secrets.io/v1beta1"
    assert rejected(es, "externalsecret-v1.json"), "the ExternalSecret schema accepted v1beta1"
    rule = json.loads(json.dumps(R["all-on"].all("PrometheusRule")[0]))
    rule["spec"]["groups"][0]["rules"][0]["exper"] = "typo"
    assert rejected(rule, "prometheusrule-v1.json"), "the PrometheusRule schema accepted a misspelt key"


# --- the chart under Argo CD, Prometheus Operator and kube-prometheus-stack -------------------


@test
def test_selectors_still_match_after_argo_cd_rewrites_the_instance_label(R):
    # Argo CD's label tracking sets app.kubernetes.io/instance on every object it applies to the
    # Application's name (backend-staging), not the Helm release name (backend).
    for env in ENVIRONMENTS:
        r = argo_label_tracking(R[env], f"{SERVICE}-{env}")
        service = r.one("Service")
        pods = r.pod_labels
        for sm in r.all("ServiceMonitor"):
            sel = sm["spec"]["selector"]
            assert ARGO_INSTANCE_LABEL not in sel.get("matchLabels", {}), \
                f"{r.name}: the ServiceMonitor selects on {ARGO_INSTANCE_LABEL}, which Argo CD rewrites"
            assert selects(sel["matchLabels"], service["metadata"]["labels"]), \
                f"{r.name}: the ServiceMonitor no longer selects the Service: no scrape targets"
        assert r.all("ServiceMonitor"), f"{r.name}: no ServiceMonitor"
        assert selects(service["spec"]["selector"], pods), f"{r.name}: the Service lost its pods"
        dep_sel = r.deployment["spec"]["selector"]["matchLabels"]
        assert selects(dep_sel, pods), f"{r.name}: Deployment selector"
        # Immutable on a live Deployment: a change here would make every `helm upgrade` fail.
        assert set(dep_sel) == {"app.kubernetes.io/name", ARGO_INSTANCE_LABEL}, \
            f"{r.name}: the Deployment selector changed to {sorted(dep_sel)}; it is immutable"
        for pdb in r.all("PodDisruptionBudget"):
            assert selects(pdb["spec"]["selector"]["matchLabels"], pods), f"{r.name}: the PDB lost its pods"
        for np in r.all("NetworkPolicy"):
            assert selects(np["spec"]["podSelector"]["matchLabels"], pods), f"{r.name}: the NetworkPolicy lost its pods"
        affinity = r.pod_spec.get("affinity", {}).get("podAntiAffinity", {})
        terms = [t["podAffinityTerm"] for t in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        terms += affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        terms += r.pod_spec.get("topologySpreadConstraints", [])
        for term in terms:
            assert selects(term["labelSelector"]["matchLabels"], pods), f"{r.name}: spread selector lost its pods"


@test
def test_service_monitor_selects_only_its_own_release(R):
    mine = helm_render(SERVICE, "--set", "serviceMonitor.enabled=true")
    other = helm_render("other", "--set", "serviceMonitor.enabled=true")
    sel = mine.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selects(sel, mine.one("Service")["metadata"]["labels"]), "the ServiceMonitor misses its Service"
    assert not selects(sel, other.one("Service")["metadata"]["labels"]), \
        "the ServiceMonitor would also scrape another release in the namespace"


@test
def test_scraped_job_label_is_the_service_name_whatever_the_release_is_called(R):
    variants = [
        helm_render(SERVICE, "--set", "serviceMonitor.enabled=true"),
        helm_render("edge", "--set", "serviceMonitor.enabled=true"),
        helm_render(SERVICE, "--set", "serviceMonitor.enabled=true", "--set", "nameOverride=api"),
        helm_render("edge", "--set", "serviceMonitor.enabled=true", "--set", "fullnameOverride=gateway"),
        R["staging"], R["production"], R["all-on"],
    ]
    for r in variants:
        jobs = operator_job(r.one("ServiceMonitor"), r.one("Service"))
        assert jobs == {SERVICE}, f"{r.name}: targets get job {jobs}, the rules select job=\"{SERVICE}\""
    # What the rules select on: the service's job.
    rules = json.dumps([r["spec"] for r in R["all-on"].all("PrometheusRule")]).replace('\\"', '"')
    assert f'job="{SERVICE}"' in rules, f'no rule selects job="{SERVICE}"'


@test
def test_environments_label_monitors_and_rules_for_kube_prometheus_stack(R):
    # kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by
    # `release: <its Helm release>` by default; without it they are ignored.
    for env in ENVIRONMENTS:
        r = R[env]
        objs = r.all("ServiceMonitor") + r.all("PrometheusRule")
        assert r.all("ServiceMonitor"), f"{env}: no ServiceMonitor"
        for obj in objs:
            release = obj["metadata"]["labels"].get("release")
            assert release == "kube-prometheus-stack", \
                f"{env}: {obj['kind']}/{obj['metadata']['name']} has release={release!r}; Prometheus ignores it"


@test
def test_one_cluster_loads_the_rules_once(R):
    # The rules group by namespace: one copy alerts for both environments of the cluster
    # (deploy/tests/operator_e2e.py shows it). Two copies ran every rule twice and wrote every
    # recorded series twice.
    files = len(list((CHART / "files/prometheus/rules").glob("*.yml")))
    shipped = {env: len(R[env].all("PrometheusRule")) for env in ENVIRONMENTS}
    assert shipped == {"staging": 0, "production": files}, shipped


@test
def test_one_cluster_gets_each_dashboard_uid_once(R):
    # Both environments share one cluster (deploy/argocd/project.yaml) and so one Grafana: its
    # dashboard sidecar reads every namespace, and two ConfigMaps with the same dashboard uid
    # collide (one file overwrites the other; Grafana refuses a duplicate uid).
    seen = {}
    for env in ENVIRONMENTS:
        for cm in R[env].all("ConfigMap"):
            if cm["metadata"].get("labels", {}).get("grafana_dashboard"):
                for key, body in cm["data"].items():
                    uid = json.loads(body).get("uid")
                    assert uid not in seen, f"dashboard uid {uid!r} ships in {seen.get(uid)} and {env}"
                    seen[uid] = env
    assert seen, "no environment ships the dashboards"


@test
def test_production_network_policy_admits_only_named_namespaces(R):
    policy = R["production"].one("NetworkPolicy")
    for rule in policy["spec"]["ingress"]:
        ports = [p["port"] for p in rule["ports"]]
        peers = rule.get("from")
        assert peers, f"production admits every pod on {ports}: no `from`"
        namespaced = [p for p in peers if "namespaceSelector" in p]
        assert namespaced, f"production {ports}: no namespaceSelector"
        for p in namespaced:
            names = p["namespaceSelector"].get("matchLabels", {})
            assert list(names) == ["kubernetes.io/metadata.name"], f"production {ports}: selector {names}"
    by_port = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["spec"]["ingress"]}
    metrics_from = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    for p in by_port[("metrics",)] if "namespaceSelector" in p]
    http_from = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                 for p in by_port[("http",)] if "namespaceSelector" in p]
    assert metrics_from and http_from and not set(metrics_from) & set(http_from), \
        f"production: http from {http_from}, metrics from {metrics_from}"


@test
def test_external_secret_renders_every_field_the_operator_defaults(R):
    # ESO fills these in on admission (CRD defaults); left out, the live object never equals
    # the rendered one and Argo CD's selfHeal re-applies it forever.
    es = R["all-on"].one("ExternalSecret")["spec"]
    schema = crd_schema("externalsecret-v1.json")["properties"]["spec"]

    def walk(obj, sch, path):
        props = sch.get("properties", {})
        for key, sub in props.items():
            if "default" in sub:
                assert key in obj, f"ExternalSecret {path}.{key} is left to the operator's default {sub['default']!r}"
            if key in obj:
                if isinstance(obj[key], dict):
                    walk(obj[key], sub, f"{path}.{key}")
                elif isinstance(obj[key], list) and "items" in sub:
                    for i, item in enumerate(obj[key]):
                        walk(item, sub["items"], f"{path}.{key}[{i}]")

    walk(es, schema, "spec")
    defaults = {"conversionStrategy": "Default", "decodingStrategy": "None", "metadataPolicy": "None"}
    for item in es["data"]:
        assert defaults.items() <= item["remoteRef"].items(), item["remoteRef"]
    for item in es["dataFrom"]:
        assert defaults.items() <= item["extract"].items(), item["extract"]


@test
def test_chart_refuses_a_pdb_that_blocks_every_drain_and_an_inverted_hpa(R):
    def refused(*args):
        try:
            helm_render(SERVICE, *args)
        except subprocess.CalledProcessError as exc:
            return exc.stderr
        return ""

    cases = [
        (("--set", "replicaCount=1", "--set", "podDisruptionBudget.minAvailable=1"), "podDisruptionBudget.minAvailable"),
        (("--set", "replicaCount=2", "--set", "podDisruptionBudget.minAvailable=100%"), "podDisruptionBudget.minAvailable"),
        (("--set", "podDisruptionBudget.maxUnavailable=0"), "podDisruptionBudget.maxUnavailable"),
        (("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=3",
          "--set", "podDisruptionBudget.minAvailable=3"), "autoscaling.minReplicas"),
        (("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=5",
          "--set", "autoscaling.maxReplicas=4"), "autoscaling.maxReplicas"),
    ]
    for args, needle in cases:
        message = refused(*args)
        assert needle in message, f"helm template {' '.join(args)} rendered (or failed without naming {needle})"
    assert not refused("--set", "replicaCount=1", "--set", "podDisruptionBudget.enabled=false")
    assert not refused("--set", "replicaCount=3", "--set", "podDisruptionBudget.minAvailable=2")


@test
def test_escape_hatches_reach_the_pod(R):
    values = yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text())
    r = R["all-on"]
    c, spec = r.container, r.pod_spec
    assert c.get("env") == values["extraEnv"], f"env {c.get('env')}"
    assert c["envFrom"][-len(values["extraEnvFrom"]):] == values["extraEnvFrom"], "extraEnvFrom not after the chart's"
    assert "configMapRef" in c["envFrom"][0], "the chart's ConfigMap must come first"
    assert c.get("volumeMounts") == values["extraVolumeMounts"]
    assert spec.get("volumes") == values["extraVolumes"]
    assert spec.get("initContainers") == values["initContainers"]
    assert spec["containers"][1:] == values["sidecars"], "sidecars must follow the app's container"
    mounted = {m["name"] for m in c["volumeMounts"]}
    assert mounted <= {v["name"] for v in spec["volumes"]}, "a mount without its volume"
    # The realistic use: the TOML settings file the app reads (app/src/main.rs: APP_CONFIG_FILE).
    config_file = next(e["value"] for e in c["env"] if e["name"] == "APP_CONFIG_FILE")
    assert any(config_file.startswith(m["mountPath"] + "/") for m in c["volumeMounts"]), config_file
    assert "APP_CONFIG_FILE" in (ROOT / "app" / "src" / "main.rs").read_text(), "the app reads no APP_CONFIG_FILE"
    d = R["default"]
    assert "env" not in d.container and "volumeMounts" not in d.container and "volumes" not in d.pod_spec
    assert "initContainers" not in d.pod_spec and len(d.pod_spec["containers"]) == 1


@test
def test_httproute_is_opt_in_and_routes_api_paths_to_the_http_port_only(R):
    for name in ("default", *ENVIRONMENTS):
        assert not R[name].all("HTTPRoute"), f"{name} renders an HTTPRoute"
    route = R["all-on"].one("HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1", route["apiVersion"]
    spec = route["spec"]
    assert spec["parentRefs"] and all(p.get("name") for p in spec["parentRefs"]), spec["parentRefs"]
    service = R["all-on"].one("Service")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert set(spec) <= {"parentRefs", "hostnames", "rules"}, set(spec)
    for rule in spec["rules"]:
        assert set(rule) == {"matches", "backendRefs"}, set(rule)
        for match in rule["matches"]:
            assert set(match) == {"path"}, match
            assert match["path"]["type"] in ("PathPrefix", "Exact"), match
            assert match["path"]["value"].startswith("/api") and "metrics" not in match["path"]["value"], match
        assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": http_port}], rule["backendRefs"]
    for host in spec.get("hostnames", []):
        assert re.fullmatch(r"(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?", host), host
    try:
        helm_render(SERVICE, "--set", "httpRoute.enabled=true")
    except subprocess.CalledProcessError as exc:
        assert "httpRoute.parentRefs" in exc.stderr, exc.stderr
    else:
        raise AssertionError("an HTTPRoute attached to no Gateway rendered")


# --- chart metadata and values ---------------------------------------------------------------


@test
def test_chart_metadata_is_v2_semver_and_app_version_matches_cargo(R):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"]), chart["version"]
    cargo = (ROOT / "app" / "Cargo.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)[1]
    assert chart["appVersion"] == version, f"appVersion {chart['appVersion']} != app/Cargo.toml {version}"


@test
def test_every_values_key_is_documented(R):
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^( {0,2})([A-Za-z][\w.-]*):", line)  # top-level and second-level keys
        if not match:
            continue
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if "#" not in line and not previous.lstrip().startswith("#"):
            missing.append(f"line {i + 1}: {match[2]}")
    assert not missing, f"undocumented keys: {missing}"


@test
def test_environment_values_hold_only_differences(R):
    defaults = values_defaults()
    written_by_pipeline = {("image", "repository"), ("image", "tag"), ("image", "digest")}

    def walk(env, default, path):
        if default == {}:
            return  # a free-form map (labels, annotations): any key is the environment's own
        for key, value in env.items():
            here = (*path, key)
            assert isinstance(default, dict) and key in default, f"{'.'.join(here)} is not a chart value"
            if isinstance(value, dict) and isinstance(default[key], dict):
                walk(value, default[key], here)
            elif here not in written_by_pipeline:
                assert value != default[key], f"{'.'.join(here)} repeats the default"

    for env in ENVIRONMENTS:
        walk(yaml.safe_load((CHART / f"values-{env}.yaml").read_text()), defaults, ())


@test
def test_bump_script_rewrites_only_the_image_lines(R):
    original = (CHART / "values-staging.yaml").read_text()
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values-staging.yaml"
        path.write_text(original)
        subprocess.run([sys.executable, ROOT / "deploy" / "bump-image.py", path, "--tag", "sha-abc1234",
                        "--digest", digest], check=True, capture_output=True)
        bumped = path.read_text()
        assert yaml.safe_load(bumped)["image"] == {"tag": "sha-abc1234", "digest": digest}
        changed = [a for a, b in zip(original.splitlines(), bumped.splitlines()) if a != b]
        assert len(changed) <= 2 and len(original.splitlines()) == len(bumped.splitlines()), changed
        refused = subprocess.run([sys.executable, ROOT / "deploy" / "bump-image.py", path, "--tag", "latest"],
                                 capture_output=True)
        assert refused.returncode != 0, "the bump script accepted latest"


# --- Argo CD ---------------------------------------------------------------------------------


@functools.cache
def argocd_docs():
    """(file name, object) for every object in deploy/argocd/."""
    return [(p.name, d) for p in sorted(ARGOCD.glob("*.yaml")) for d in load_docs(p)]


def argocd_objects():
    return {(d["kind"], d["metadata"]["name"]): d for _, d in argocd_docs()}


@test
def test_appproject_restricts_sources_destinations_and_kinds(R):
    objs = argocd_objects()
    projects = {name: d for (kind, name), d in objs.items() if kind == "AppProject"}
    assert set(projects) == {SERVICE, f"{SERVICE}-gitops"}, f"AppProjects {set(projects)}"
    spec = projects[SERVICE]["spec"]
    assert spec["sourceRepos"] and all("*" not in s for s in spec["sourceRepos"]), spec["sourceRepos"]
    for dest in spec["destinations"]:
        assert "*" not in dest["namespace"] and "*" not in dest.get("server", ""), dest
    assert spec.get("clusterResourceWhitelist") == [{"group": "", "kind": "Namespace"}], \
        "cluster-scoped kinds other than Namespace are allowed"
    allowed = {(g["group"], g["kind"]) for g in spec["namespaceResourceWhitelist"]}
    for env in ENVIRONMENTS + ("all-on",):
        for d in R[env].docs:
            if d["kind"] == "Pod" and env == "all-on":
                continue  # the helm test pod; environments turn tests off (Argo CD never runs them)
            group = d["apiVersion"].rsplit("/", 1)[0] if "/" in d["apiVersion"] else ""
            assert (group, d["kind"]) in allowed, f"{env}: the project forbids {group}/{d['kind']}"


@test
def test_applications_sync_each_environment_from_the_chart(R):
    objs = argocd_objects()
    project = objs[("AppProject", SERVICE)]
    destinations = {(d.get("server"), d["namespace"]) for d in project["spec"]["destinations"]}
    apps = {d["metadata"]["name"]: d for (kind, _), d in objs.items() if kind == "Application"}
    for env in ENVIRONMENTS:
        app = apps.get(f"{SERVICE}-{env}")
        assert app, f"no Application {SERVICE}-{env}"
        spec = app["spec"]
        assert spec["project"] == project["metadata"]["name"]
        sources = app_sources(app)
        assert all(s["repoURL"] in project["spec"]["sourceRepos"] for s in sources), sources
        chart = chart_source(app)
        assert chart["path"] == f"deploy/charts/{SERVICE}"
        files = chart["helm"]["valueFiles"]
        refs = {f"${s['ref']}/": s for s in sources if s.get("ref")}
        # A `$ref/...` value file comes from another source (production reads values from main).
        assert len(files) == 1, files
        ref = next((r for r in refs if files[0].startswith(r)), None)
        path = CHART / files[0] if ref is None else ROOT / files[0][len(ref):]
        assert path == CHART / f"values-{env}.yaml" and path.is_file(), files
        if ref:
            assert refs[ref]["targetRevision"] == "main", f"{env} reads its values from {refs[ref]['targetRevision']}"
        assert (spec["destination"]["server"], spec["destination"]["namespace"]) in destinations
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
        assert app["metadata"]["namespace"] == project["metadata"]["namespace"], "Application outside Argo CD's namespace"


def app_sources(app):
    """The sources of an Application, single- or multi-source."""
    spec = app["spec"]
    return spec.get("sources") or [spec["source"]]


def chart_source(app):
    charts = [s for s in app_sources(app) if s.get("path")]
    assert len(charts) == 1, f"{app['metadata']['name']}: expected one chart source, found {len(charts)}"
    return charts[0]


@test
def test_staging_tracks_main_and_production_a_released_chart_tag(R):
    apps = {d["metadata"]["name"]: d for (kind, _), d in argocd_objects().items() if kind == "Application"}
    staging = chart_source(apps[f"{SERVICE}-staging"])
    assert staging["targetRevision"] == "main", f"staging tracks {staging['targetRevision']}, not main"
    production = chart_source(apps[f"{SERVICE}-production"])
    revision = str(production["targetRevision"])
    assert revision not in ("main", "HEAD", "master", "*") and re.fullmatch(r"v\d+\.\d+\.\d+", revision), \
        f"production's chart tracks {revision!r}: chart changes would reach it with staging's"


@test
def test_root_application_applies_deploy_argocd_and_can_delete_nothing(R):
    # The promotion moves application-production.yaml's targetRevision on main; the root
    # Application is what carries that change into Argo CD.
    objs = argocd_objects()
    root = objs.get(("Application", f"{SERVICE}-gitops"))
    assert root, f"no root Application {SERVICE}-gitops"
    project = objs[("AppProject", root["spec"]["project"])]
    assert root["spec"]["project"] != SERVICE, "the root Application must not run in the service's project"
    source = root["spec"]["source"]
    assert source["path"] == "deploy/argocd" and source["targetRevision"] == "main", source
    assert source["repoURL"] in project["spec"]["sourceRepos"]
    argocd_ns = root["metadata"]["namespace"]
    assert root["spec"]["destination"]["namespace"] == argocd_ns
    assert [d["namespace"] for d in project["spec"]["destinations"]] == [argocd_ns], project["spec"]["destinations"]
    assert not project["spec"].get("clusterResourceWhitelist"), "the root project may write cluster-scoped kinds"
    kinds = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    assert kinds == {("argoproj.io", "Application"), ("argoproj.io", "AppProject")}, kinds
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": False, "selfHeal": True}, \
        "the root Application may prune: deleting a file would delete an environment"
    assert "finalizers" not in root["metadata"], "deleting the root Application would cascade to the environments"
    for d in (d for _, d in argocd_docs()):
        assert d["metadata"]["namespace"] == argocd_ns and (d["apiVersion"].split("/")[0], d["kind"]) in kinds, \
            f"deploy/argocd holds {d['kind']}/{d['metadata']['name']}, which the root Application cannot apply"


# --- GitHub Actions --------------------------------------------------------------------------


@test
def test_every_action_is_pinned_to_a_full_commit_sha(R):
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            match = re.search(r"uses:\s*(\S+)(.*)", line)
            if not match or match[1].startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match[1]), f"{path.name}:{n}: {match[1]} is not SHA-pinned"
            assert re.search(r"#\s*v\d+\.\d+\.\d+", match[2]), f"{path.name}:{n}: no # vX.Y.Z comment"


@test
def test_ci_runs_make_test_on_pr_and_push_with_least_privilege(R):
    wf = workflow("ci.yaml")
    on = on_block(wf)
    assert "pull_request" in on and "push" in on, on
    assert wf["permissions"] == {"contents": "read"}, wf["permissions"]
    assert "group" in wf["concurrency"], "no concurrency group"
    runs = [s.get("run", "") for job in wf["jobs"].values() for s in job["steps"]]
    assert any(line.strip() == "make test" for r in runs for line in r.splitlines()), "ci.yaml does not run `make test`"
    cached = " ".join(str(s.get("with", {}).get("path", "")) for job in wf["jobs"].values() for s in job["steps"])
    for path in ("~/.cargo/registry", "target", "~/.cache/pip", "~/.npm"):
        assert path in cached, f"ci.yaml does not cache {path}"


@test
def test_release_builds_multiarch_signs_attests_and_bumps_staging(R):
    wf = workflow("release.yaml")
    on = on_block(wf)
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"], on
    assert wf["permissions"] == {} or wf["permissions"] == {"contents": "read"}, wf["permissions"]
    text = (WORKFLOWS / "release.yaml").read_text()
    # The registry host is a configuration variable, not a secret: the runner drops any job
    # output that contains a secret, and the image name is one.
    assert "vars.REGISTRY" in text and "secrets.DOCKER_REGISTRY" not in text, "the registry must be vars.REGISTRY"
    for needle in ("linux/amd64,linux/arm64", "secrets.DOCKER_USER", "secrets.DOCKER_PASSWORD",
                   "type=sha", "type=semver", "type=ref,event=branch",
                   "cosign sign", "provenance: mode=max", "sbom: true", "cache-from", "cache-to",
                   "values-staging.yaml", "values-production.yaml"):
        assert needle in text, f"release.yaml lacks {needle!r}"
    for name, job in wf["jobs"].items():
        perms = job.get("permissions", {})
        if perms.get("id-token") == "write":
            assert any("cosign" in str(s.get("run", "")) for s in job["steps"]), f"id-token in {name}, which does not sign"


@test
def test_dependabot_updates_cargo_actions_and_docker(R):
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"] for u in config["updates"]}
    assert {"cargo", "github-actions", "docker"} <= ecosystems, ecosystems


# --- runner ----------------------------------------------------------------------------------


def print_settings(render_file):
    r = Rendering(Path(render_file).stem, load_docs(render_file))
    for key, value in app_config(r).items():
        sys.stdout.write(f"{key}={value}\0")
    return 0


def main():
    if sys.argv[1] == "--settings":
        return print_settings(sys.argv[2])
    render_dir = Path(sys.argv[1])
    R = {name: Rendering(name, load_docs(render_dir / f"{name}.yaml")) for name in (*RENDERINGS, "fixture")}
    passed = failed = 0
    for fn in TESTS:
        try:
            fn(R)
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
