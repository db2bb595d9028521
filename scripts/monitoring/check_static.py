#!/usr/bin/env python3
"""Consistency checks that need no running service.

    check_static.py compose COMPOSE_JSON   the compose file (normalised by `docker compose config
                                           --format json`) against the stack's requirements
    check_static.py rules                  alerts: severity, annotations, runbooks, inhibition,
                                           receivers; SLO thresholds and probes; aggregations and
                                           joins keep the namespace
    check_static.py dashboards             data source uids, layout, units, variables; burn-rate
                                           thresholds and windows; restart panels; every query of
                                           the service filters on $namespace
"""

from __future__ import annotations

import json
import re
import sys

import yaml

from common import (
    ALERT_PREFIX,
    ALERTMANAGER_FILE,
    ALL_VARIABLES,
    BLACKBOX_FILE,
    ENV_LABEL,
    JOB,
    PROMETHEUS_FILE,
    ROOT,
    RULES_DIR,
    RUNBOOKS_DIR,
    SERVICE,
    SLO_FILE,
    Checks,
    all_panels,
    dashboard_queries,
    latency_buckets,
    load_dashboards,
    load_rules,
    prometheus_datasource_uid,
    seconds,
    substitute,
    variable_queries,
)

SEVERITIES = {"page", "ticket"}
# The alerts the stack promises (docs/observability.md, "Alerts"); the game day relies on the names.
REQUIRED_ALERTS = (f"{ALERT_PREFIX}Down", f"{ALERT_PREFIX}ReplicaLost", f"{ALERT_PREFIX}Absent", "HighLatencyP99",
                   "HighErrorRatio", "PrometheusRuleEvaluationFailures", "PrometheusConfigReloadFailed",
                   "AlertmanagerNotificationsFailing", "AlertmanagerDown")
RECEIVER_URL = "http://alert-receiver:5001/alerts/{name}"
RUNBOOK_SECTIONS = ["## What it means", "## Who is affected", "## How to diagnose", "## How to mitigate"]


# ----------------------------------------------------------------------------------------- compose
def check_compose(c: Checks, normalised_path: str) -> None:
    raw_text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(raw_text)
    cfg = json.loads(open(normalised_path).read())
    env_example = (ROOT / ".env.example").read_text()
    services = cfg["services"]

    c.check("version" not in raw, "no top-level `version:` key (Compose v2 spec)")
    expected = {SERVICE, "lb", "prometheus", "alertmanager", "alert-receiver", "blackbox", "grafana", "jaeger"}
    c.check(expected <= set(services), "services present", f"missing {expected - set(services)}")

    # The jmeter slot (issue C): the marker comes after every service of this stack; only the
    # load-testing setup's own `jmeter` service may follow it.
    marker = "  # --- jmeter: owned by the load-testing setup (issue C) ---\n"
    services_block = raw_text.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    before, found, after = services_block.partition(marker)
    after_services = re.findall(r"^  ([a-zA-Z0-9_-]+):", after, re.M)
    c.check(bool(found) and after_services in ([], ["jmeter"]),
            "the jmeter slot comment is the last entry under services: (only jmeter after it)",
            f"services after it: {after_services}")

    app = services[SERVICE]
    c.check(app.get("build", {}).get("dockerfile") == "app/Dockerfile", f"{SERVICE} is built from app/Dockerfile")
    c.check(app.get("build", {}).get("context") == str(ROOT), f"{SERVICE} build context is the repo root")
    c.check("container_name" not in app and not app.get("ports"),
            f"{SERVICE} has no container_name and no host port (so --scale works)")
    c.check(app.get("healthcheck", {}).get("test") == ["CMD", f"/{SERVICE}", "healthcheck"],
            f"{SERVICE} healthcheck runs `/{SERVICE} healthcheck`")
    c.check(app.get("stop_grace_period") == "30s", f"{SERVICE} stop_grace_period is 30s")
    c.check({"4000", "9464"} <= set(map(str, app.get("expose", []))), f"{SERVICE} exposes 4000 and 9464")
    c.check("APP__TRACING__OTLP_ENDPOINT" in app.get("environment", {}),
            f"{SERVICE} takes APP__TRACING__OTLP_ENDPOINT from the environment")
    # /api/v1/info discloses the host; compose turns it on for the demo, in writing (docs/contract.md).
    c.check(app.get("environment", {}).get("APP__INFO__ENABLED") == "true",
            f"{SERVICE} sets APP__INFO__ENABLED explicitly (the demo shows /api/v1/info)")

    lb_ports = services["lb"].get("ports", [])
    c.check(any(str(p.get("target")) == "4000" and str(p.get("published")) == "4000" for p in lb_ports),
            "lb publishes the API on 4000")
    lb_mounts = [v.get("source", "") for v in services["lb"].get("volumes", [])]
    c.check(any(m.endswith("deploy/compose/nginx.conf") for m in lb_mounts), "lb mounts deploy/compose/nginx.conf")

    images = {
        "lb": r"^nginx:\d+\.\d+\.\d+-alpine$",
        "prometheus": r"^prom/prometheus:v\d+\.\d+\.\d+$",
        "alertmanager": r"^prom/alertmanager:v\d+\.\d+\.\d+$",
        "grafana": r"^grafana/grafana:\d+\.\d+\.\d+$",
        "jaeger": r"^jaegertracing/(all-in-one|jaeger):\d+\.\d+\.\d+$",
        "alert-receiver": r"^python:\d+\.\d+\.\d+-alpine$",
        "blackbox": r"^prom/blackbox-exporter:v\d+\.\d+\.\d+$",
    }
    for name, pattern in images.items():
        image = services[name].get("image", "")
        c.check(re.match(pattern, image) is not None, f"{name} image is official and pinned", image)

    c.check(services["jaeger"].get("profiles") == ["tracing"], "jaeger runs only with the tracing profile")
    # Both ways to turn traces on must point the backend at Jaeger's OTLP/HTTP port.
    jaeger_ports = set(map(str, services["jaeger"].get("expose", [])))
    for where, text in ((".env.example", env_example),
                        ("Makefile", (ROOT / "Makefile").read_text())):
        urls = re.findall(r"OTLP_ENDPOINT=(\S+)", text)
        c.check(urls == ["http://jaeger:4318"] and "4318" in jaeger_ports,
                f"{where} points the backend at jaeger:4318 (OTLP/HTTP), which jaeger exposes",
                f"{urls}, jaeger exposes {sorted(jaeger_ports)}")

    # jmeter (issue C) is a one-shot job with its own rules; it is not checked here.
    for name, svc in services.items():
        if name in ("jmeter", "grafana-password"):  # one-shot jobs, not long-running services
            continue
        if name != "jaeger":
            c.check(bool(svc.get("healthcheck", {}).get("test")), f"{name} has a healthcheck")
        c.check(svc.get("restart") in {"unless-stopped", "always", "on-failure"}, f"{name} has a restart policy")
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        c.check("cpus" in limits and "memory" in limits, f"{name} has cpu and memory limits")
        for dep, how in (svc.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dep == "grafana-password" else "service_healthy"
            c.check(how.get("condition") == wanted, f"{name} waits for {dep} ({wanted})")
        for vol in svc.get("volumes", []):
            if vol.get("type") == "volume":
                c.check(vol.get("source") in cfg.get("volumes", {}), f"{name} volume {vol.get('source')} is named")

    for name in ("prometheus", "alertmanager", "grafana"):
        c.check(any(v.get("type") == "volume" for v in services[name].get("volumes", [])),
                f"{name} keeps its data in a named volume")

    # No known admin password: from the environment, or generated on the first start.
    grafana_env = raw["services"]["grafana"]["environment"]
    c.check("GF_SECURITY_ADMIN_PASSWORD" not in grafana_env
            and grafana_env.get("GF_SECURITY_ADMIN_PASSWORD__FILE") == "/run/secrets/grafana/admin_password",
            "Grafana reads its admin password from the generated secret file, never a default")
    init = raw["services"].get("grafana-password", {})
    script = "\n".join(init.get("command", []))
    c.check("/dev/urandom" in script and "GF_ADMIN_PASSWORD" in script,
            "grafana-password uses GF_ADMIN_PASSWORD or generates a random one")
    c.check((services["grafana"].get("depends_on") or {}).get("grafana-password", {}).get("condition")
            == "service_completed_successfully", "grafana starts after its password exists")
    c.check(re.search(r"^GF_ADMIN_PASSWORD=\S", env_example, re.M) is None,
            ".env.example sets no Grafana password (a committed password is a known default)")

    # the mounted configuration is what the tests check
    prom_mounts = {v.get("source"): v.get("target") for v in services["prometheus"].get("volumes", [])}
    c.check(prom_mounts.get(str(PROMETHEUS_FILE.parent)) == "/etc/prometheus",
            "prometheus mounts monitoring/prometheus at /etc/prometheus")
    am_mounts = {v.get("source"): v.get("target") for v in services["alertmanager"].get("volumes", [])}
    c.check(am_mounts.get(str(ALERTMANAGER_FILE.parent)) == "/etc/alertmanager",
            "alertmanager mounts monitoring/alertmanager at /etc/alertmanager")

    prom = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    dns = (jobs.get(JOB) or {}).get("dns_sd_configs") or [{}]
    c.check(dns[0].get("names") == [SERVICE] and dns[0].get("type") == "A" and dns[0].get("port") == 9464,
            f"prometheus discovers every {SERVICE} replica with dns_sd_configs (A, {SERVICE}, 9464)")
    c.check(all("scrape_interval" not in j and "scrape_timeout" not in j for j in jobs.values()),
            "every scrape job uses the global interval and timeout (the alerts' promised times rely on them)",
            str([n for n, j in jobs.items() if "scrape_interval" in j or "scrape_timeout" in j]))

    # alert-receiver: the webhook receiver of alertmanager.yml, the script mounted read-only.
    receiver = services["alert-receiver"]
    mounts = {v.get("source"): v for v in receiver.get("volumes", [])}
    script = str(ROOT / "monitoring" / "alert-receiver" / "receiver.py")
    c.check(mounts.get(script, {}).get("read_only") is True,
            "alert-receiver mounts monitoring/alert-receiver/receiver.py read-only")
    command = receiver.get("command") or []
    c.check(command[:2] == ["python3", "/receiver.py"] and "0.0.0.0:5001" in command and
            "5001" in map(str, receiver.get("expose", [])) and not receiver.get("ports"),
            "alert-receiver runs receiver.py on port 5001, exposed to the stack only", str(command))
    c.check(receiver.get("environment", {}).get("PYTHONUNBUFFERED") == "1",
            "alert-receiver prints unbuffered (docker compose logs shows each page at once)")
    c.check("/receiver.py" in (receiver.get("healthcheck") or {}).get("test", []),
            "alert-receiver's healthcheck runs the script itself")

    # blackbox: the exporter Prometheus' blackbox job scrapes, probing through lb.
    bb_mounts = {v.get("source"): v.get("target") for v in services["blackbox"].get("volumes", [])}
    bb_target = bb_mounts.get(str(BLACKBOX_FILE.parent))
    bb_command = " ".join(services["blackbox"].get("command") or [])
    c.check(bool(bb_target) and f"--config.file={bb_target}/{BLACKBOX_FILE.name}" in bb_command,
            "blackbox mounts monitoring/blackbox and reads blackbox.yml from it", f"{bb_mounts}, {bb_command}")
    c.check("9115" in map(str, services["blackbox"].get("expose", [])) and not services["blackbox"].get("ports"),
            "blackbox exposes 9115 to the stack only")
    probe = jobs.get("blackbox") or {}
    modules = yaml.safe_load(BLACKBOX_FILE.read_text())["modules"]
    targets = [t for sc in probe.get("static_configs", []) for t in sc.get("targets", [])]
    relabels = probe.get("relabel_configs", [])
    c.check(probe.get("metrics_path") == "/probe" and set(probe.get("params", {}).get("module", [])) <= set(modules)
            and probe.get("params", {}).get("module"),
            "prometheus job blackbox asks /probe for a module of blackbox.yml", str(probe.get("params")))
    c.check(bool(targets) and all(t.startswith("http://lb:4000/") for t in targets),
            "the blackbox job probes through the load balancer (http://lb:4000/...)", str(targets))
    c.check({"target_label": "__address__", "replacement": "blackbox:9115"} in relabels and
            {"source_labels": ["__address__"], "target_label": "__param_target"} in relabels and
            {"source_labels": ["__param_target"], "target_label": "instance"} in relabels,
            "the blackbox job relabels target -> __param_target -> instance, and scrapes blackbox:9115")


# ------------------------------------------------------------------------------------------- rules
def check_rules(c: Checks) -> None:
    rules = load_rules()
    alerts = [r for r in rules if r.kind == "alert"]
    c.check(len(alerts) > 0, "there are alerts")
    names = [a.name for a in alerts]
    c.check(len(names) == len(set(names)), "alert names are unique", str(names))
    for want in REQUIRED_ALERTS:
        c.check(want in names, f"alert {want} exists")

    runbooks_used = set()
    for a in alerts:
        c.check(a.labels.get("severity") in SEVERITIES, f"{a.name}: severity is one of {sorted(SEVERITIES)}",
                str(a.labels.get("severity")))
        c.check(a.labels.get("service") == SERVICE, f"{a.name}: carries service={SERVICE} (inhibition matches it)")
        for key in ("summary", "description", "runbook_url"):
            c.check(bool(a.annotations.get(key)), f"{a.name}: has a {key} annotation")
        url = a.annotations.get("runbook_url", "")
        c.check(url == f"docs/runbooks/{a.name}.md", f"{a.name}: runbook_url is docs/runbooks/{a.name}.md", url)
        path = ROOT / url
        if c.check(path.is_file(), f"{a.name}: runbook {url} exists"):
            runbooks_used.add(path.name)
            text = path.read_text()
            for section in RUNBOOK_SECTIONS:
                c.check(section in text, f"{url}: has the section '{section}'")
    orphans = {p.name for p in RUNBOOKS_DIR.glob("*.md")} - runbooks_used - {"README.md"}
    c.check(not orphans, "every runbook belongs to an alert", str(sorted(orphans)))

    # One promtool test file per rule file, and a firing and a silent case for every alert.
    tests_dir = RULES_DIR.parent / "tests"
    firing: dict[str, int] = {}
    silent: dict[str, int] = {}
    for rule_file in sorted(RULES_DIR.glob("*.yml")):
        test_file = tests_dir / f"{rule_file.stem}.test.yml"
        if not c.check(test_file.is_file(), f"{rule_file.name} has its test file tests/{test_file.name}"):
            continue
        test = yaml.safe_load(test_file.read_text())
        c.check(f"../rules/{rule_file.name}" in test.get("rule_files", []),
                f"tests/{test_file.name} loads rules/{rule_file.name}")
        for case in test.get("tests", []):
            for art in case.get("alert_rule_test", []) or []:
                bucket = firing if art.get("exp_alerts") else silent
                bucket[art["alertname"]] = bucket.get(art["alertname"], 0) + 1
    for a in alerts:
        c.check(firing.get(a.name, 0) >= 1, f"{a.name}: has a firing test case")
        c.check(silent.get(a.name, 0) >= 1, f"{a.name}: has a silent test case")

    # Alertmanager routes every severity the rules use to its own receiver (amtool checks the
    # routing tree itself in test-monitoring.sh); the inhibition uses the same label values.
    am = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    routed = {m.split("=", 1)[1].strip('"') for r in am["route"].get("routes", []) for m in r.get("matchers", [])
              if m.startswith("severity=")}
    c.check(SEVERITIES <= routed, "alertmanager routes page and ticket", str(routed))
    # Inhibition scoped to a shared cause (issue 13, defect 6): an inhibiting alert keeps
    # inhibiting while silenced, so `equal: [service]` alone let one silenced page hide every
    # ticket of the service. Each rule: page -> ticket, within a service, and narrowed by another
    # label in `equal` (slo, instance: both sides must carry it) or by the target's alertname.
    rules_ = am.get("inhibit_rules", [])
    c.check(bool(rules_), "alertmanager has inhibit rules")
    for i, rule in enumerate(rules_):
        src, dst, equal = rule.get("source_matchers", []), rule.get("target_matchers", []), rule.get("equal", [])
        c.check('severity="page"' in src and 'severity="ticket"' in dst,
                f"inhibit rule {i}: a page holds back tickets, never a page", f"{src} -> {dst}")
        c.check("service" in equal, f"inhibit rule {i}: within one service (equal has service)", str(equal))
        narrowed = [label for label in equal if label != "service"
                    and f'{label}=~".+"' in src and f'{label}=~".+"' in dst]
        by_name = any(m.startswith("alertname=") for m in dst) and any(m.startswith("alertname=") for m in src)
        c.check(bool(narrowed) or by_name,
                f"inhibit rule {i}: scoped to a shared cause (another label both sides carry, or named alerts)",
                f"equal {equal}, {src} -> {dst}")
    # Out of the box, notifications reach the compose service alert-receiver, one path per receiver.
    for receiver in am["receivers"]:
        urls = [h.get("url") for h in receiver.get("webhook_configs", [])]
        want = RECEIVER_URL.format(name=receiver["name"])
        c.check(urls == [want], f"alertmanager receiver {receiver['name']} posts to {want}", str(urls))
        c.check(all(h.get("send_resolved") for h in receiver.get("webhook_configs", [])),
                f"alertmanager receiver {receiver['name']} also sends resolved notifications")

    check_env_aggregation(c, load_rules())

    # The thresholds written by hand agree with slo.yaml and the backend's buckets.
    slo = yaml.safe_load(SLO_FILE.read_text())
    threshold = slo["slos"]["latency"]["threshold_seconds"]
    c.check(threshold in latency_buckets(), f"SLO threshold {threshold}s is a bucket boundary of LATENCY_BUCKETS")
    c.check(slo["slos"]["availability"]["objective"] == 0.999 and slo["slos"]["latency"]["objective"] == 0.99,
            "slo.yaml objectives are 99.9% and 99%")
    probes = slo["slos"]["availability"].get("probes", "")
    prom_jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS_FILE.read_text())["scrape_configs"]}
    probe_job = re.fullmatch(r'\s*job="([^"]+)"\s*', probes)
    c.check(probe_job is not None and prom_jobs.get(probe_job.group(1), {}).get("metrics_path") == "/probe",
            "the availability SLI's probes select a blackbox scrape job of prometheus.yml", probes)
    p99 = next(a for a in alerts if a.name == "HighLatencyP99")
    c.check(re.search(rf"> {re.escape(str(threshold))}\b", p99.expr) is not None,
            f"HighLatencyP99 uses the SLO threshold {threshold}s")
    # BackendDown's promise: the next scrape fails (at most one interval, plus the timeout for a
    # hung process), the next evaluation sees it, and `for` later it fires.
    down = next(a for a in alerts if a.name == f"{ALERT_PREFIX}Down")
    g = yaml.safe_load(PROMETHEUS_FILE.read_text())["global"]
    worst = seconds(g["scrape_interval"]) + seconds(g["scrape_timeout"]) + seconds(g["evaluation_interval"]) + \
        seconds(down.for_)
    c.check(worst <= 120, f"BackendDown: scrape + timeout + evaluation + for = {worst}s, within the promised 2 minutes")


_GROUPING_CLAUSE = re.compile(r"\b(by|on)\s*\(([^)]*)\)")


def check_env_aggregation(c: Checks, rules) -> None:
    """Issue 12, defect 7: staging and production in one cluster are the same job in two namespaces.
    Every aggregation or join of the service's rules that keeps the job or the instance keeps the
    namespace too (`on ()`, a whole-vector fallback, is allowed), and every alert of the service
    ends up carrying it. meta.yml watches compose's own prometheus/alertmanager jobs: left out."""
    for r in rules:
        if r.file == "meta.yml":
            continue
        for kind, labels in _GROUPING_CLAUSE.findall(r.expr):
            names = {x.strip() for x in labels.split(",") if x.strip()}
            if names & {"job", "instance"}:
                c.check(ENV_LABEL in names, f"{r.file}: {r.name}: `{kind} ({labels})` keeps {ENV_LABEL}",
                        " ".join(r.expr.split()))


# -------------------------------------------------------------------------------------- dashboards
def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or
                a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])


def tested_expressions() -> set[str]:
    """Every promql_expr_test expression of the rule tests, whitespace normalised."""
    out = set()
    for path in sorted((RULES_DIR.parent / "tests").glob("*.test.yml")):
        for case in yaml.safe_load(path.read_text()).get("tests", []):
            for t in case.get("promql_expr_test", []) or []:
                out.add(" ".join(t["expr"].split()))
    return out


def check_slo_panels(c: Checks, dashboards: dict[str, dict]) -> None:
    """Issue 13, defect 7: the burn-rate panels draw every threshold and window the alerts use."""
    alerting = yaml.safe_load(SLO_FILE.read_text())["alerting"]
    rates = {float(arm["burn_rate"]) for sev in alerting.values() for arm in sev["windows"]}
    windows = {w for sev in alerting.values() for arm in sev["windows"] for w in (arm["long"], arm["short"])}
    slos = yaml.safe_load(SLO_FILE.read_text())["slos"]
    for slo in slos:
        found = [(name, p) for name, d in dashboards.items() for p in all_panels(d)
                 if p.get("title", "").lower() == f"{slo} burn rate"]
        if not c.check(len(found) == 1, f'one "{slo.capitalize()} burn rate" panel', str([n for n, _ in found])):
            continue
        name, panel = found[0]
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        drawn = {float(s["value"]) for s in steps if s.get("value") is not None}
        style = panel["fieldConfig"]["defaults"].get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
        c.check(rates <= drawn and style != "off",
                f'{name}: "{panel["title"]}" draws every burn-rate threshold of the alerts {sorted(rates)}',
                f"drawn {sorted(drawn)}, style {style}")
        plotted = set()
        for t in panel.get("targets", []):
            m = re.search(rf'slo:sli_error:ratio_rate(\w+)\{{[^}}]*slo="{slo}"', t.get("expr", ""))
            if m:
                plotted.add(m.group(1))
        c.check(windows <= plotted, f'{name}: "{panel["title"]}" plots every window of the alerts {sorted(windows, key=seconds)}',
                f"missing {sorted(windows - plotted, key=seconds)}")


def check_restart_panels(c: Checks, dashboards: dict[str, dict]) -> None:
    """Issue 13, defect 8: restarts counted per job, new series included, and unit-tested."""
    tested = tested_expressions()
    for name, d in dashboards.items():
        for where, expr in dashboard_queries(d):
            if "process_start_time_seconds" not in expr or "changes(" not in expr:
                continue
            c.check("min_over_time(process_start_time_seconds" in expr and "instance)" not in expr,
                    f"{name} {where}: counts restarts per job, a replica back on a new address included",
                    expr.replace("\n", " "))
            concrete = " ".join(substitute(expr, ALL_VARIABLES).split())
            c.check(concrete in tested, f"{name} {where}: the query is unit-tested in tests/*.test.yml "
                    "(with every variable All and a 1h range)", concrete)


_SELECTOR = re.compile(r"\{[^{}]*\}")


def env_filtered(expr: str) -> bool:
    """Every selector of the service's job (or the probes' job) filters on the namespace variable."""
    for sel in _SELECTOR.findall(expr):
        if (f'job="{JOB}"' in sel or 'job="blackbox"' in sel) and f'{ENV_LABEL}=~"${ENV_LABEL}"' not in sel:
            return False
    return True


def check_dashboards(c: Checks) -> None:
    uid = prometheus_datasource_uid()
    dashboards = load_dashboards()
    check_slo_panels(c, dashboards)
    check_restart_panels(c, dashboards)
    c.check(len(dashboards) >= 3, "three dashboards or more", str(list(dashboards)))
    uids = [d.get("uid") for d in dashboards.values()]
    c.check(len(set(uids)) == len(uids) and all(uids), "dashboard uids are set and unique", str(uids))

    for name, d in dashboards.items():
        panels = all_panels(d)
        ids = [p.get("id") for p in panels]
        c.check(len(ids) == len(set(ids)), f"{name}: panel ids are unique")
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        for var in (ENV_LABEL, "instance", "route"):
            c.check(var in variables, f"{name}: has the ${var} variable")
        # Issue 12, defect 7: staging and production in one cluster are told apart by namespace.
        # Its "All" must match series without the label too (compose has none): allValue ".*".
        env = variables.get(ENV_LABEL, {})
        c.check(env.get("includeAll") is True and env.get("allValue") == ".*",
                f'{name}: ${ENV_LABEL} has "All" = .* (compose\'s series have no {ENV_LABEL} label)',
                str({k: env.get(k) for k in ("includeAll", "allValue")}))
        for vname, selector, _ in variable_queries(d):
            if vname != ENV_LABEL:
                c.check(env_filtered(selector), f"{name}: variable ${vname} filters on ${ENV_LABEL}", selector)
        for vname, var in variables.items():
            ds = var.get("datasource") or {}
            c.check(ds.get("uid") == uid, f"{name}: variable ${vname} uses data source uid {uid!r}", str(ds))
        c.check(len(variable_queries(d)) == len(variables), f"{name}: every variable is a label_values query")

        placed = []
        for p in panels:
            title = p.get("title")
            pos = p.get("gridPos", {})
            c.check(all(isinstance(pos.get(k), int) for k in "xywh") and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24,
                    f'{name}: "{title}" lies within the 24-column grid', str(pos))
            for other_title, other in placed:
                c.check(not overlaps(pos, other), f'{name}: "{title}" does not overlap "{other_title}"')
            placed.append((title, pos))
            if p.get("type") == "row":
                continue
            c.check((p.get("datasource") or {}).get("uid") == uid, f'{name}: "{title}" uses data source {uid!r}')
            for t in p.get("targets", []):
                c.check((t.get("datasource") or {}).get("uid") == uid,
                        f'{name}: "{title}" target {t.get("refId")} uses data source {uid!r}')
                try:
                    substitute(t["expr"], ALL_VARIABLES)
                    ok, err = True, ""
                except KeyError as e:
                    ok, err = False, str(e)
                c.check(ok, f'{name}: "{title}" uses only known template variables', err)
            for t in p.get("targets", []):
                c.check(env_filtered(t["expr"]), f'{name}: "{title}" target {t.get("refId")}: every selector '
                        f'of the service filters on ${ENV_LABEL}', t["expr"].replace("\n", " "))
            c.check(bool(p.get("targets")), f'{name}: "{title}" has a query')
            c.check(bool(p.get("fieldConfig", {}).get("defaults", {}).get("unit")), f'{name}: "{title}" sets a unit')
            c.check(bool(p.get("description")), f'{name}: "{title}" has a description')

        # top to bottom: panels are stored in reading order
        order = [(p["gridPos"]["y"], p["gridPos"]["x"]) for p in d["panels"]]
        c.check(order == sorted(order), f"{name}: panels are stored top to bottom, left to right")


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    c = Checks(f"static checks ({what})")
    if what == "compose" and len(sys.argv) == 3:
        check_compose(c, sys.argv[2])
    elif what == "rules":
        check_rules(c)
    elif what == "dashboards":
        check_dashboards(c)
    else:
        print(__doc__)
        return 2
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
