#!/usr/bin/env python3
"""Render monitoring/prometheus/rules/slo.yml from monitoring/slo.yaml (SLOs written once).

    slo_rules.py --write   rewrite the rule file
    slo_rules.py --check   exit 1 when the committed rule file differs from what slo.yaml gives

The output follows the SRE workbook's multi-window, multi-burn-rate scheme, as sloth and pyrra
generate it:
  - recording rules slo:sli_error:ratio_rate<W>{slo=...} for every window an alert needs, plus the
    SLO window itself (30d) for the error budget;
  - for an SLO with `probes` (availability): its two parts per window as well,
    slo:sli_error_requests:ratio_rate<W> (5xx share of the requests the app recorded) and
    slo:sli_error_probes:ratio_rate<W> (failed share of the probes through the load balancer),
    combined as 1 - (1 - requests) * (1 - probes), or either alone when the other has no data;
  - slo:objective:ratio and slo:error_budget_remaining:ratio for the dashboards;
  - one page and one ticket alert per SLO.

Every SLI is per (job, namespace): staging and production in one cluster are the same job in two
namespaces and have a budget each (issue 12, defect 7). Compose has no namespace label, and
`by (job, namespace)` gives one series per job there, as `by (job)` did.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from textwrap import fill, indent

import yaml

from common import ROOT, RULES_DIR, SLO_FILE, seconds

RULE_FILE = RULES_DIR / "slo.yml"

# Windows up to this length are evaluated with the global interval; longer ones in a group that
# runs once a minute, because a rate over days reads far more samples.
SHORT_WINDOWS_MAX_SECONDS = 6 * 3600
LONG_GROUP_INTERVAL = "1m"

NO_BREAK = "\u00a0"

ALERT_NAMES = {  # (slo, severity) -> alert name; each has docs/runbooks/<name>.md
    ("availability", "page"): "AvailabilityBudgetBurnFast",
    ("availability", "ticket"): "AvailabilityBudgetBurnSlow",
    ("latency", "page"): "LatencyBudgetBurnFast",
    ("latency", "ticket"): "LatencyBudgetBurnSlow",
}

WHAT_BURNS = {
    "availability": "5xx responses",
    "latency": "requests slower than {threshold}s",
}
WHAT_BURNS_WITH_PROBES = {
    "availability": "failed requests (5xx responses, and failed probes through the load balancer)",
}


def fmt(number: float) -> str:
    """A number as PromQL and YAML show it: 0.001, 14.4, 6 (no float noise like 0.0010000000000000009)."""
    text = f"{round(number, 10):.10f}".rstrip("0").rstrip(".")
    return text or "0"


def le_matcher(threshold: float) -> str:
    """Matches the bucket label in Prometheus 2 ("1") and 3, which normalises integers ("1.0")."""
    text = fmt(threshold)
    if "." in text:
        return f'le="{text}"'
    return f'le=~"{text}|{text}\\\\.0"'


# The labels every SLI keeps: the job, and the environment it runs in (a cluster's namespace).
SLI_BY = "job, namespace"


def sum_rate(metric: str, matchers: str, window: str) -> str:
    return f"sum by ({SLI_BY}) (\n  rate({metric}{{{matchers}}}[{window}])\n)"


def error_ratio_expr(slo: str, selector: str, window: str, threshold: float | None) -> str:
    """The share of bad requests among the requests the selector counts, over the window."""
    if slo == "availability":
        total = sum_rate("http_requests_total", selector, window)
        errors = sum_rate("http_requests_total", f'{selector}, status=~"5.."', window)
        # `or 0 * total`: no 5xx series yet means a ratio of 0, not "no data".
        # `total > 0`: no traffic at all means no ratio (nothing to alert on), not NaN.
        return (f"(\n{indent(errors, '  ')}\n  or\n{indent('0 * ' + total, '  ')}\n)\n"
                f"/\n(\n{indent(total, '  ')}\n  > 0\n)\n")
    good = sum_rate("http_request_duration_seconds_bucket", f"{selector}, {le_matcher(threshold)}", window)
    total = sum_rate("http_request_duration_seconds_count", selector, window)
    return f"1 - (\n{indent(good, '  ')}\n  /\n  (\n{indent(total, '    ')}\n    > 0\n  )\n)\n"


def block(text: str, spaces: int) -> str:
    """text as the body of a YAML `|` scalar: indented, blank lines kept empty, one final newline."""
    return indent(text.rstrip("\n") + "\n", " " * spaces)


def record(name: str, expr: str, labels: dict[str, str]) -> str:
    label_text = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return (
        f"      - record: {name}\n"
        f"        expr: |\n{block(expr, 10)}"
        f"        labels: {{{label_text}}}\n"
    )


def probes_error_expr(probes: str, window: str) -> str:
    """The share of failed probes over the window, averaged over the probed targets (per namespace,
    for probes that carry one; compose's carry none)."""
    return f"1 - avg by (namespace) (\n  avg_over_time(probe_success{{{probes}}}[{window}])\n)\n"


def combined_expr(service: str, slo: str, window: str) -> str:
    """A request fails when no replica answers it (probes) or when the one that does fails it."""
    sel = f'{{job="{service}", slo="{slo}"}}'
    requests = f"slo:sli_error_requests:ratio_rate{window}{sel}"
    probes = f"slo:sli_error_probes:ratio_rate{window}{sel}"
    return (f"1 - (\n  (1 - {requests})\n  *\n  (1 - {probes})\n)\n"
            f"or\n{requests}\n"
            f"or\n{probes}\n")


def sli_records(windows, slos, selector, service):
    """One `slo:sli_error:ratio_rate<window>` record per window and SLO (after its parts, if any:
    rules of a group run in order, so the combination reads this evaluation's parts)."""
    out = []
    for window in windows:
        for slo, cfg in slos.items():
            labels = {"service": service, "slo": slo}
            expr = error_ratio_expr(slo, selector, window, cfg.get("threshold_seconds"))
            if not cfg.get("probes"):
                out.append(record(f"slo:sli_error:ratio_rate{window}", expr, labels))
                continue
            # The parts carry job (and namespace, if any) like the requests' sum, so the three
            # series match one to one.
            out.append(record(f"slo:sli_error_requests:ratio_rate{window}", expr, labels))
            out.append(record(f"slo:sli_error_probes:ratio_rate{window}",
                              probes_error_expr(cfg["probes"], window), {"job": service, **labels}))
            out.append(record(f"slo:sli_error:ratio_rate{window}", combined_expr(service, slo, window), labels))
    return out


def render(spec: dict) -> str:
    service = spec["service"]
    selector = spec["selector"]
    slos = spec["slos"]
    alerting = spec["alerting"]

    windows = {w for sev in alerting.values() for arm in sev["windows"] for w in (arm["long"], arm["short"])}
    windows |= {cfg["window"] for cfg in slos.values()}
    ordered = sorted(windows, key=seconds)
    short = [w for w in ordered if seconds(w) <= SHORT_WINDOWS_MAX_SECONDS]
    long = [w for w in ordered if seconds(w) > SHORT_WINDOWS_MAX_SECONDS]

    out = [
        "# GENERATED by scripts/monitoring/slo_rules.py from monitoring/slo.yaml. Do not edit by hand:\n",
        "# change monitoring/slo.yaml, then run `scripts/monitoring/slo_rules.py --write`.\n",
        "# The test suite fails when this file and slo.yaml drift apart.\n",
        "groups:\n",
        f"  - name: slo-{service}-sli-short\n",
        "    rules:\n",
    ]
    out += sli_records(short, slos, selector, service)

    out += [
        "\n",
        f"  - name: slo-{service}-sli-long\n",
        f"    interval: {LONG_GROUP_INTERVAL}\n",
        "    rules:\n",
    ]
    out += sli_records(long, slos, selector, service)
    # The SLI series carry job (and namespace) from their sum; the job is named after the service.
    # The objective is the same in every namespace: one series per SLO, without namespace
    # (dashboards divide by it with `on (job, slo) group_left`).
    job = f'job="{service}"'
    for slo, cfg in slos.items():
        labels = {"job": service, "service": service, "slo": slo}
        out.append(record("slo:objective:ratio", f'vector({fmt(cfg["objective"])})\n', labels))
    for slo, cfg in slos.items():
        budget = fmt(1 - cfg["objective"])
        expr = f'1 - (slo:sli_error:ratio_rate{cfg["window"]}{{{job}, slo="{slo}"}} / {budget})\n'
        out.append(record("slo:error_budget_remaining:ratio", expr, {"service": service, "slo": slo}))

    out += ["\n", f"  - name: slo-{service}-alerts\n", "    rules:\n"]
    for slo, cfg in slos.items():
        budget = 1 - cfg["objective"]
        what = (WHAT_BURNS_WITH_PROBES if cfg.get("probes") else WHAT_BURNS)[slo]
        what = what.format(threshold=fmt(cfg.get("threshold_seconds") or 0))
        for severity, sev_cfg in alerting.items():
            name = ALERT_NAMES[(slo, severity)]
            arms = []
            for arm in sev_cfg["windows"]:
                limit = f"({fmt(arm['burn_rate'])} * {fmt(budget)})"
                arms.append(
                    "(\n"
                    f'  slo:sli_error:ratio_rate{arm["long"]}{{{job}, slo="{slo}"}} > {limit}\n'
                    "  and\n"
                    f'  slo:sli_error:ratio_rate{arm["short"]}{{{job}, slo="{slo}"}} > {limit}\n'
                    ")"
                )
            expr = "\nor\n".join(arms) + "\n"
            burn_text = " or ".join(
                f"{fmt(a['burn_rate'])}x over {a['long']} and {a['short']}" for a in sev_cfg["windows"]
            )
            speed = "fast" if severity == "page" else "steadily"
            value = "{{ $value | humanizePercentage }}".replace(" ", NO_BREAK)  # one word for fill()
            description = fill(
                f"{what[0].upper() + what[1:]} are {value} of the requests over "
                f"the long window: the {slo} error budget of the {fmt(cfg['objective'] * 100)}% "
                f"{cfg['window']} SLO burns faster than {burn_text}.",
                width=100, initial_indent=" " * 12, subsequent_indent=" " * 12, break_on_hyphens=False,
            ).replace(NO_BREAK, " ")
            out.append(
                f"      - alert: {name}\n"
                f"        expr: |\n{block(expr, 10)}"
                f"        for: {sev_cfg['for']}\n"
                f"        labels: {{severity: {severity}, service: {service}, slo: {slo}}}\n"
                "        annotations:\n"
                f"          summary: {service} is burning its {slo} error budget {speed}\n"
                "          description: >-\n"
                f"{description}\n"
                f"          runbook_url: docs/runbooks/{name}.md\n"
            )
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the rule file")
    mode.add_argument("--check", action="store_true", help="fail if the rule file is out of date")
    args = parser.parse_args()

    wanted = render(yaml.safe_load(SLO_FILE.read_text()))
    if args.write:
        RULE_FILE.write_text(wanted)
        print(f"wrote {RULE_FILE.relative_to(ROOT)}")
        return 0
    current = RULE_FILE.read_text() if RULE_FILE.exists() else ""
    if current == wanted:
        print(f"{RULE_FILE.relative_to(ROOT)} matches {SLO_FILE.relative_to(ROOT)}")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "committed", "from slo.yaml")
    )
    print(f"{RULE_FILE.relative_to(ROOT)} is out of date: run scripts/monitoring/slo_rules.py --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
