"""Shared helpers of the monitoring checks (scripts/test-monitoring.sh runs them)."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES_DIR = MONITORING / "prometheus" / "rules"
DASHBOARDS_DIR = MONITORING / "grafana" / "dashboards"
DATASOURCES_FILE = MONITORING / "grafana" / "provisioning" / "datasources" / "datasources.yml"
SLO_FILE = MONITORING / "slo.yaml"
PROMETHEUS_FILE = MONITORING / "prometheus" / "prometheus.yml"
ALERTMANAGER_FILE = MONITORING / "alertmanager" / "alertmanager.yml"
BLACKBOX_FILE = MONITORING / "blackbox" / "blackbox.yml"
RECEIVER_SCRIPT = MONITORING / "alert-receiver" / "receiver.py"
RUNBOOKS_DIR = ROOT / "docs" / "runbooks"
METRICS_RS = ROOT / "app" / "src" / "metrics.rs"
NAME_SOURCE = ROOT / "app" / "Cargo.toml"


def service_name() -> str:
    """The service's name, written once: `[package] name` in app/Cargo.toml (`make rename` changes it)."""
    return tomllib.loads(NAME_SOURCE.read_text())["package"]["name"]


SERVICE = service_name()
# The job label Prometheus gives the service's targets: the scrape job is named after it.
JOB = SERVICE
# Its alerts are named in CamelCase after it: <Service>Down, <Service>Absent.
ALERT_PREFIX = "".join(part.capitalize() for part in SERVICE.split("-"))

# Series Prometheus makes itself rather than scraping them from the service.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

# What a dashboard's template variables become when its queries run outside Grafana. Two sets:
# "All" for every variable, and one concrete instance and route (filled in by the live test).
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}
# Every template variable set to "All" (its allValue). `namespace=~".*"` also matches series that
# have no namespace label at all, as in compose.
ALL_VARIABLES = {"namespace": ".*", "instance": ".*", "route": ".*"}
# The environment label: a cluster's namespace (the Prometheus Operator sets it on every target).
# Rules aggregate by it beside job, and dashboards filter on it (issue 12, defect 7).
ENV_LABEL = "namespace"


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    """A single-unit Prometheus duration ("15s", "6h", "30d") in seconds."""
    return int(duration[:-1]) * _UNIT_SECONDS[duration[-1]]


def latency_buckets() -> list[float]:
    """The histogram buckets the backend uses: LATENCY_BUCKETS in app/src/metrics.rs."""
    m = re.search(r"LATENCY_BUCKETS:\s*\[f64;\s*\d+\]\s*=\s*\[([^\]]*)\]", METRICS_RS.read_text())
    if not m:
        sys.exit(f"no LATENCY_BUCKETS array in {METRICS_RS}")
    return [float(b) for b in m.group(1).replace(",", " ").split()]


class Checks:
    """Collects named checks; prints each one and a count, and exits non-zero on any failure."""

    def __init__(self, title: str):
        self.title = title
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"  FAIL {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def finish(self) -> int:
        total = self.passed + len(self.failed)
        if self.failed:
            print(f"{self.title}: {len(self.failed)} of {total} checks FAILED", flush=True)
            return 1
        print(f"{self.title}: all {total} checks passed", flush=True)
        return 0


@dataclass
class Rule:
    file: str
    group: str
    kind: str  # "record" or "alert"
    name: str
    expr: str
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    for_: str | None = None


def load_rules() -> list[Rule]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for r in group["rules"]:
                kind = "record" if "record" in r else "alert"
                rules.append(
                    Rule(
                        file=path.name,
                        group=group["name"],
                        kind=kind,
                        name=r[kind],
                        expr=r["expr"],
                        labels=r.get("labels") or {},
                        annotations=r.get("annotations") or {},
                        for_=r.get("for"),
                    )
                )
    return rules


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested panels included, rows themselves included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((f'panel "{panel.get("title")}" target {target.get("refId")}', target["expr"]))
    return out


def variable_queries(dashboard: dict) -> list[tuple[str, str, str | None]]:
    """(variable name, PromQL selector, label) for every query variable.

    `label_values(selector, label)` gives its selector and label; any other query is its own PromQL.
    """
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
        if m:
            out.append((var["name"], m.group(1), m.group(2)))
        else:
            out.append((var["name"], query, None))
    return out


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replaces Grafana variables ($x, ${x}, [[x]]) from values, the built-ins and fails on unknown ones."""
    merged = {**GRAFANA_BUILTINS, **values}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in merged:
            raise KeyError(f"no value for template variable ${name} in: {expr}")
        return merged[name]

    return _VAR.sub(repl, expr)


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")  # not $grafana_variables
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and label names removed)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word, call = m.group(1), m.group(2)
        if call or word in _KEYWORDS:
            continue
        names.add(word)
    # `{__name__="x"}` selectors
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def prometheus_datasource_uid() -> str:
    sources = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    uids = [s["uid"] for s in sources if s["type"] == "prometheus"]
    if len(uids) != 1:
        sys.exit(f"expected one prometheus data source in {DATASOURCES_FILE}, found {uids}")
    return uids[0]


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Prometheus text format -> ({family: type}, {series name: [labels, ...]})."""
    types: dict[str, str] = {}
    series: dict[str, list[dict]] = {}
    line_re = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+")
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = line_re.match(line)
            if m:
                series.setdefault(m.group(1), []).append(dict(label_re.findall(m.group(3) or "")))
    return types, series


def exposed_names(types: dict[str, str], series: dict[str, list[dict]]) -> set[str]:
    """Every name a query can use: the series, and a histogram's _bucket/_sum/_count."""
    names = set(series)
    for family, kind in types.items():
        names.add(family)
        if kind == "histogram":
            names.update({f"{family}_bucket", f"{family}_sum", f"{family}_count"})
        if kind == "summary":
            names.update({f"{family}_sum", f"{family}_count"})
    return names
