#!/usr/bin/env python3
"""The service's name agrees everywhere it is written: template/check_name.py [--root DIR]

The name is written once, as `[package] name` in app/Cargo.toml; Rust derives it, Helm takes
`.Chart.Name`, scripts and tests read it. Where a file must hold it literally (Prometheus' job,
every `job="..."` selector in rules, rule tests and dashboards, the SLO source, alert labels, the
compose service, the chart, Argo CD, the Dockerfile, the workflows), this check fails when it
differs: a partial rename that leaves `job="old"` in the rules while Prometheus scrapes
`job="new"` silences every alert, and promtool's own tests cannot see it, since they feed their
own series. Exit 1 with one line per disagreement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

# `job="x"`, `job=~"x"`, `job=\"x\"` (in dashboard JSON), `job: x` (promtool exp_labels).
JOB_MATCHER = re.compile(r"""\bjob\s*(?:=~?|!=)\s*\\?["']([^"'\\]*)|\bjob:\s+["']?([A-Za-z0-9_.-]+)""")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def check(root: Path) -> list[str]:
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    cargo = tomllib.loads((root / "app/Cargo.toml").read_text())
    name = cargo["package"]["name"]
    for binary in cargo.get("bin", []):
        expect(binary.get("name") == name, f"app/Cargo.toml: [[bin]] name {binary.get('name')!r} is not {name!r}")

    dockerfile = (root / "app/Dockerfile").read_text()
    expect(f'ENTRYPOINT ["/{name}"]' in dockerfile, f"app/Dockerfile: ENTRYPOINT is not /{name}")
    expect(f"-p {name} " in dockerfile, f"app/Dockerfile: does not build package {name}")

    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    service = compose.get(name)
    expect(service is not None, f"docker-compose.yml: no service {name!r} (services: {sorted(compose)})")
    if service:
        expect(service.get("image", "").startswith(f"{name}:"), f"docker-compose.yml: {name} image is not {name}:<tag>")
        expect(service.get("healthcheck", {}).get("test", [None, None])[1] == f"/{name}",
               f"docker-compose.yml: {name} healthcheck does not run /{name}")
    nginx = (root / "deploy/compose/nginx.conf").read_text()
    expect(f"http://{name}:4000" in nginx, f"deploy/compose/nginx.conf: does not proxy to http://{name}:4000")

    prometheus = yaml.safe_load((root / "monitoring/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    own = jobs.get(name, {})
    expect(bool(own), f"monitoring/prometheus/prometheus.yml: no scrape job {name!r} (jobs: {sorted(jobs)})")
    names = [n for sd in own.get("dns_sd_configs", []) for n in sd.get("names", [])]
    expect(names == [name], f"monitoring/prometheus/prometheus.yml: job {name} discovers {names}, not [{name!r}]")

    # Every job a rule, rule test, dashboard or the SLO source selects is a job Prometheus has,
    # and the service's own job is the one they select.
    selected: set[str] = set()
    sources = sorted((root / "monitoring/prometheus/rules").glob("*.yml")) + \
        sorted((root / "monitoring/prometheus/tests").glob("*.yml")) + \
        sorted((root / "monitoring/grafana/dashboards").glob("*.json")) + [root / "monitoring/slo.yaml"]
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in JOB_MATCHER.finditer(line):
                for alternative in (match.group(1) or match.group(2)).split("|"):
                    selected.add(alternative)
                    expect(alternative in jobs, f"{path.relative_to(root)}:{number}: job {alternative!r} is not a "
                           f"Prometheus scrape job ({sorted(jobs)})")
    expect(name in selected, f"no rule, test or dashboard selects job={name!r}")

    slo = yaml.safe_load((root / "monitoring/slo.yaml").read_text())
    expect(slo.get("service") == name, f"monitoring/slo.yaml: service {slo.get('service')!r} is not {name!r}")
    alerts = {}
    for path in sorted((root / "monitoring/prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
                    service_label = (rule.get("labels") or {}).get("service")
                    expect(service_label == name,
                           f"{path.relative_to(root)}: alert {rule['alert']} has service={service_label!r}, not {name!r}")
    for wanted in (f"{camel(name)}Down", f"{camel(name)}Absent"):
        expect(wanted in alerts, f"monitoring/prometheus/rules: no alert {wanted} ({sorted(alerts)})")

    for path in sorted((root / "monitoring/grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        expect(board.get("uid", "").startswith(f"{name}-"), f"{path.relative_to(root)}: uid {board.get('uid')!r} "
               f"does not start with {name}-")
        expect(board.get("title", "").startswith(f"{name} / "), f"{path.relative_to(root)}: title "
               f"{board.get('title')!r} does not start with '{name} / '")
    provider = yaml.safe_load((root / "monitoring/grafana/provisioning/dashboards/dashboards.yml").read_text())
    expect(provider["providers"][0].get("folder") == name, "grafana provisioning: the dashboard folder is not the name")

    charts = sorted(p.parent.name for p in (root / "deploy/charts").glob("*/Chart.yaml"))
    expect(charts == [name], f"deploy/charts: charts {charts}, expected [{name!r}]")
    chart_file = root / "deploy/charts" / name / "Chart.yaml"
    if chart_file.is_file():
        chart = yaml.safe_load(chart_file.read_text())
        expect(chart.get("name") == name, f"{chart_file.relative_to(root)}: name {chart.get('name')!r} is not {name!r}")
    for path in sorted((root / "deploy/argocd").glob("application-*.yaml")):
        app = yaml.safe_load(path.read_text())
        # One source, or several (production: the chart at a release tag, its values from main).
        paths = [s["path"] for s in app["spec"].get("sources") or [app["spec"]["source"]] if "path" in s]
        expect(paths == [f"deploy/charts/{name}"],
               f"{path.relative_to(root)}: the chart source's path is not deploy/charts/{name}")
        expect(app["metadata"]["name"].startswith(f"{name}-"),
               f"{path.relative_to(root)}: Application {app['metadata']['name']!r} is not named {name}-<env>")
    for path in sorted((root / ".github/workflows").glob("*.y*ml")):
        for chart_path in set(re.findall(r"deploy/charts/([A-Za-z0-9_-]+)", path.read_text())):
            expect(chart_path == name, f"{path.relative_to(root)}: refers to deploy/charts/{chart_path}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    root = parser.parse_args().root.resolve()
    problems = check(root)
    for problem in problems:
        print(f"  FAIL {problem}")
    if problems:
        print(f"name check: {len(problems)} disagreements with app/Cargo.toml's name")
        return 1
    print(f"name check: the name {tomllib.loads((root / 'app/Cargo.toml').read_text())['package']['name']!r} "
          "agrees across Cargo, Dockerfile, compose, nginx, Prometheus, rules, tests, dashboards, chart, Argo CD, workflows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
