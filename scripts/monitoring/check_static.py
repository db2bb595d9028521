#!/usr/bin/env python3
"""Consistency checks that need no running service.

    check_static.py compose COMPOSE_JSON   the compose file (normalised by `docker compose config
                                           --format json`) against the stack's requirements
    check_static.py rules                  alerts: severity, annotations, runbooks; SLO thresholds
    check_static.py dashboards             data source uids, layout, units, variables
"""

from __future__ import annotations

import json
import re
import sys

import yaml

from common import (
    ALERT_PREFIX,
    ALERTMANAGER_FILE,
    JOB,
    PROMETHEUS_FILE,
    ROOT,
    RULES_DIR,
    RUNBOOKS_DIR,
    SERVICE,
    SLO_FILE,
    Checks,
    all_panels,
    latency_buckets,
    load_dashboards,
    load_rules,
    prometheus_datasource_uid,
    seconds,
    substitute,
    variable_queries,
)

SEVERITIES = {"page", "ticket"}
RUNBOOK_SECTIONS = ["## What it means", "## Who is affected", "## How to diagnose", "## How to mitigate"]


# ----------------------------------------------------------------------------------------- compose
def check_compose(c: Checks, normalised_path: str) -> None:
    raw_text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(raw_text)
    cfg = json.loads(open(normalised_path).read())
    env_example = (ROOT / ".env.example").read_text()
    services = cfg["services"]

    c.check("version" not in raw, "no top-level `version:` key (Compose v2 spec)")
    expected = {SERVICE, "lb", "prometheus", "alertmanager", "grafana", "jaeger"}
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


# ------------------------------------------------------------------------------------------- rules
def check_rules(c: Checks) -> None:
    rules = load_rules()
    alerts = [r for r in rules if r.kind == "alert"]
    c.check(len(alerts) > 0, "there are alerts")
    names = [a.name for a in alerts]
    c.check(len(names) == len(set(names)), "alert names are unique", str(names))
    for want in (f"{ALERT_PREFIX}Down", f"{ALERT_PREFIX}Absent", "HighLatencyP99", "HighErrorRatio"):
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
    inhibit = am.get("inhibit_rules", [{}])[0]
    c.check(inhibit.get("source_matchers") == ['severity="page"'] and
            inhibit.get("target_matchers") == ['severity="ticket"'] and "service" in inhibit.get("equal", []),
            "alertmanager: a page inhibits the tickets of its service")

    # The thresholds written by hand agree with slo.yaml and the backend's buckets.
    slo = yaml.safe_load(SLO_FILE.read_text())
    threshold = slo["slos"]["latency"]["threshold_seconds"]
    c.check(threshold in latency_buckets(), f"SLO threshold {threshold}s is a bucket boundary of LATENCY_BUCKETS")
    c.check(slo["slos"]["availability"]["objective"] == 0.999 and slo["slos"]["latency"]["objective"] == 0.99,
            "slo.yaml objectives are 99.9% and 99%")
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


# -------------------------------------------------------------------------------------- dashboards
def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or
                a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])


def check_dashboards(c: Checks) -> None:
    uid = prometheus_datasource_uid()
    dashboards = load_dashboards()
    c.check(len(dashboards) >= 3, "three dashboards or more", str(list(dashboards)))
    uids = [d.get("uid") for d in dashboards.values()]
    c.check(len(set(uids)) == len(uids) and all(uids), "dashboard uids are set and unique", str(uids))

    for name, d in dashboards.items():
        panels = all_panels(d)
        ids = [p.get("id") for p in panels]
        c.check(len(ids) == len(set(ids)), f"{name}: panel ids are unique")
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        for var in ("instance", "route"):
            c.check(var in variables, f"{name}: has the ${var} variable")
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
                    substitute(t["expr"], {"instance": ".*", "route": ".*"})
                    ok, err = True, ""
                except KeyError as e:
                    ok, err = False, str(e)
                c.check(ok, f'{name}: "{title}" uses only known template variables', err)
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
