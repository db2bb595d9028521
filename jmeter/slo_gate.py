#!/usr/bin/env python3
"""SLO gate for a JMeter run: summarise a CSV .jtl and fail when it breaks the service's SLOs.

    python3 jmeter/slo_gate.py jmeter/results/results.jtl [--slo monitoring/slo.yaml]
                               [--routes jmeter/routes.csv]

Prints, per sampler label and in total: samples, requests/s, p50/p95/p99 and max latency, errors
and error %. Exits 0 when both SLOs from monitoring/slo.yaml hold for the whole run and for every
route that jmeter/routes.csv lists (each must also have samples), 1 when one is broken, 2 when the
input cannot be judged (missing, empty or unreadable .jtl, SLO or routes file).

- Availability: errors / samples <= 1 - slos.availability.objective. An error is every sample
  JMeter marked failed (wrong status, wrong body, socket error) except one whose only failure is
  the duration assertion: that one is slow, and latency is judged on its own, as Prometheus does.
  Unlike the server-side SLI (5xx only), a 4xx counts here: the load test's requests are ours and
  must all succeed.
- Latency: the slos.latency.objective quantile of all samples' elapsed time <= threshold_seconds
  (nearest rank: p99 <= 150 ms means at least 99 % of the samples took <= 150 ms, which is what
  the Prometheus `le="0.15"` bucket measures).

The routes file is the one the plan reads (its format: docs/load-testing.md, "Adding a route");
`load_routes` checks it, and jmeter/run.sh calls it before a run. Reads the CSV .jtl of JMeter 2.13 and 5.x, with
a header row (print_field_names=true) or, without one, JMeter's default column order. Python 3
standard library; PyYAML is used when present.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SLO = Path(__file__).resolve().parent.parent / "monitoring" / "slo.yaml"
DEFAULT_ROUTES = Path(__file__).resolve().parent / "routes.csv"
# The routes file's header row: the plan takes its variable names from it, and uses these.
ROUTE_COLUMNS = ("label", "method", "path", "weight", "status", "body_regex", "request_body")
ROUTE_SEPARATOR = ";"
# The plan sends these; all but GET with request_body as application/json.
ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTE_LABEL = re.compile(r"[A-Za-z0-9_.-]+")
# JMeter's DurationAssertion message (resource duration_assertion_failure, language=en)
DURATION_FAILURE = "The operation lasted too long"
# Column order JMeter writes when no header row is saved: the first eight never move.
HEADERLESS_COLUMNS = ["timeStamp", "elapsed", "label", "responseCode",
                      "responseMessage", "threadName", "dataType", "success"]
TOTAL = "TOTAL"


class InputError(Exception):
    """The .jtl or SLO file cannot be judged (exit code 2)."""


@dataclass(frozen=True)
class Slo:
    max_error_ratio: float
    latency_quantile: float
    latency_threshold_ms: float


@dataclass(frozen=True)
class Route:
    label: str
    method: str
    path: str
    weight: int
    status: str
    body_regex: str
    request_body: str


@dataclass(frozen=True)
class Sample:
    start_ms: int
    elapsed_ms: int
    label: str
    response_code: str
    success: bool
    failure_message: str | None  # None: the column was not saved

    @property
    def slow_only(self) -> bool:
        """Failed only the duration assertion: the response itself was fine."""
        if not self.response_code.startswith("2"):
            return False
        if self.failure_message is None:
            return False
        return self.failure_message.startswith(DURATION_FAILURE)

    @property
    def is_error(self) -> bool:
        return not self.success and not self.slow_only


@dataclass
class Stats:
    label: str
    elapsed: list[int] = field(default_factory=list)
    errors: int = 0

    def add(self, sample: Sample) -> None:
        self.elapsed.append(sample.elapsed_ms)
        self.errors += sample.is_error

    @property
    def count(self) -> int:
        return len(self.elapsed)

    @property
    def error_ratio(self) -> float:
        return self.errors / self.count if self.count else 0.0

    def percentile(self, q: float) -> int:
        return percentile(self.elapsed, q)


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank quantile: the smallest value with at least q of all values <= it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- SLO file
def parse_simple_yaml(text: str) -> dict:
    """Block mappings of scalars, for hosts without PyYAML: enough for the `slos:` section.

    List items (`- ...`) are skipped and flow collections stay strings; the gate needs neither.
    """
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for number, raw in enumerate(text.splitlines(), 1):
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.strip() == "---" or line.lstrip().startswith("- "):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep or not key:
            raise InputError(f"line {number}: expected 'key: value', got {raw.strip()!r}")
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if value:
            parent[key] = _scalar(value)
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def _scalar(value: str):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def load_slo(path: Path) -> Slo:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read SLO file {path}: {err.strerror}") from err
    try:
        import yaml  # optional

        doc = yaml.safe_load(text)
    except ImportError:
        doc = parse_simple_yaml(text)
    try:
        availability = float(doc["slos"]["availability"]["objective"])
        latency = doc["slos"]["latency"]
        quantile = float(latency["objective"])
        threshold_s = float(latency["threshold_seconds"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: needs slos.availability.objective, slos.latency.objective and "
                         f"slos.latency.threshold_seconds ({err!r})") from err
    for name, value in (("availability.objective", availability), ("latency.objective", quantile)):
        if not 0 < value < 1:
            raise InputError(f"{path}: slos.{name} must be in (0, 1), got {value}")
    if threshold_s <= 0:
        raise InputError(f"{path}: slos.latency.threshold_seconds must be > 0, got {threshold_s}")
    return Slo(max_error_ratio=round(1 - availability, 12), latency_quantile=quantile,
               latency_threshold_ms=threshold_s * 1000)


# ----------------------------------------------------------------------------- routes file
def load_routes(path: Path) -> list[Route]:
    """The routes of a routes file, checked as strictly as the plan needs them.

    JMeter's CSV Data Set sends every line after the header as a route, comments and blank lines
    included, and when a line has fewer fields than columns it keeps the previous line's values
    for the rest. So: the header row first, then only route lines, each with every column.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read routes file {path}: {err.strerror}") from err
    lines = text.splitlines()
    header = ROUTE_SEPARATOR.join(ROUTE_COLUMNS)
    if not lines or lines[0] != header:
        bom = " (without the byte order mark)" if lines and lines[0].startswith("\ufeff") else ""
        raise InputError(f"{path}:1: the first line must be the header row {header!r}{bom}")
    routes: list[Route] = []
    for number, line in enumerate(lines[1:], 2):
        try:
            if not line.strip() or line.lstrip().startswith("#"):
                raise ValueError("no comments or blank lines: JMeter would send them as routes")
            routes.append(_route(line))
        except ValueError as err:
            raise InputError(f"{path}:{number}: {err}: {line!r}") from err
    if not routes:
        raise InputError(f"{path} lists no route")
    labels = [route.label for route in routes]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise InputError(f"{path}: label listed twice: {', '.join(twice)}")
    return routes


def _route(line: str) -> Route:
    fields = line.split(ROUTE_SEPARATOR)
    if len(fields) != len(ROUTE_COLUMNS):
        hint = "a GET line ends with ';'" if len(fields) < len(ROUTE_COLUMNS) else "a field cannot hold a ';'"
        raise ValueError(f"{len(fields)} fields, expected {len(ROUTE_COLUMNS)} "
                         f"({ROUTE_SEPARATOR.join(ROUTE_COLUMNS)}); {hint}")
    label, method, path, weight, status, body_regex, request_body = fields
    if not ROUTE_LABEL.fullmatch(label) or label == TOTAL:
        raise ValueError(f"label {label!r} is not letters, digits, _ . - (nor {TOTAL})")
    if method not in ROUTE_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(ROUTE_METHODS)}")
    if not path.startswith("/") or re.search(r"\s", path):
        raise ValueError(f"path {path!r} must start with / and hold no space")
    if not re.fullmatch(r"[1-9][0-9]*", weight):
        raise ValueError(f"weight {weight!r} is not a whole number >= 1")
    if not re.fullmatch(r"[1-5][0-9][0-9](\|[1-5][0-9][0-9])*", status):
        raise ValueError(f"status {status!r} is not an HTTP status code, or several as 200|201")
    try:
        re.compile(body_regex)
    except re.error as err:
        raise ValueError(f"body_regex is not a regular expression ({err})") from err
    if method == "GET" and request_body:
        raise ValueError("a GET sends no request_body")
    if request_body:
        try:
            json.loads(request_body)
        except json.JSONDecodeError as err:
            raise ValueError(f"request_body is not JSON ({err})") from err
    return Route(label, method, path, int(weight), status, body_regex, request_body)


# ----------------------------------------------------------------------------- .jtl
def read_jtl(path: Path) -> list[Sample]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from err
    with handle:
        rows = csv.reader(handle)
        first = next(rows, None)
        if first is None:
            raise InputError(f"{path} is empty: did JMeter load the plan? (see its log)")
        if first and first[0].lstrip().startswith("<"):
            raise InputError(f"{path} is XML; set jmeter.save.saveservice.output_format=csv")
        if first and first[0] == "timeStamp":
            columns, pending = first, []
        else:
            columns, pending = HEADERLESS_COLUMNS, [first]
        index = {name: i for i, name in enumerate(columns)}
        missing = {"timeStamp", "elapsed", "label", "responseCode", "success"} - index.keys()
        if missing:
            raise InputError(f"{path}: header lacks {', '.join(sorted(missing))}")
        samples = []
        for row in itertools.chain(pending, rows):
            if not row:
                continue
            try:
                samples.append(_sample(row, index))
            except (IndexError, ValueError) as err:
                raise InputError(f"{path}:{rows.line_num}: not a JMeter CSV sample ({err})") from err
    if not samples:
        raise InputError(f"{path} has no samples: did JMeter load the plan? (see its log)")
    return samples


def _sample(row: list[str], index: dict[str, int]) -> Sample:
    message = index.get("failureMessage")
    return Sample(
        start_ms=int(row[index["timeStamp"]]),
        elapsed_ms=int(row[index["elapsed"]]),
        label=row[index["label"]],
        response_code=row[index["responseCode"]],
        success=row[index["success"]].strip().lower() == "true",
        failure_message=row[message] if message is not None and message < len(row) else None,
    )


# ----------------------------------------------------------------------------- report
@dataclass
class Report:
    by_label: dict[str, Stats]
    total: Stats
    window_s: float

    @classmethod
    def of(cls, samples: list[Sample]) -> Report:
        total, by_label = Stats(TOTAL), {}
        for sample in samples:
            by_label.setdefault(sample.label, Stats(sample.label)).add(sample)
            total.add(sample)
        start = min(s.start_ms for s in samples)
        end = max(s.start_ms + s.elapsed_ms for s in samples)
        return cls(dict(sorted(by_label.items())), total, max(end - start, 1) / 1000)

    def table(self) -> str:
        head = f"{'label':<24}{'samples':>9}{'rps':>9}{'p50 ms':>8}{'p95 ms':>8}" \
               f"{'p99 ms':>8}{'max ms':>8}{'errors':>8}{'error %':>9}"
        lines = [head, "-" * len(head)]
        for stats in [*self.by_label.values(), self.total]:
            lines.append(
                f"{stats.label[:23]:<24}{stats.count:>9}{stats.count / self.window_s:>9.1f}"
                f"{stats.percentile(0.50):>8}{stats.percentile(0.95):>8}{stats.percentile(0.99):>8}"
                f"{max(stats.elapsed):>8}{stats.errors:>8}{100 * stats.error_ratio:>9.3f}")
        return "\n".join(lines)


def slo_checks(stats: Stats, slo: Slo, prefix: str = "") -> list[tuple[bool, str]]:
    """Both SLOs on one set of samples: the whole run, or one route's."""
    quantile = stats.percentile(slo.latency_quantile)
    name = f"p{100 * slo.latency_quantile:g}"
    return [
        (stats.error_ratio <= slo.max_error_ratio,
         f"{prefix}availability: error ratio {100 * stats.error_ratio:.3f} % <= {100 * slo.max_error_ratio:g} %"),
        (quantile <= slo.latency_threshold_ms,
         f"{prefix}latency: {name} {quantile} ms <= {slo.latency_threshold_ms:g} ms"),
    ]


def verdicts(report: Report, slo: Slo, min_samples: int, routes: list[Route]) -> list[tuple[bool, str]]:
    """The run's checks, then each route's: it has samples, and meets both SLOs on its own."""
    total = report.total
    checks = [(total.count >= min_samples, f"samples {total.count} >= {min_samples}"),
              *slo_checks(total, slo)]
    for route in routes:
        stats = report.by_label.get(route.label)
        count = stats.count if stats else 0
        checks.append((count > 0, f"route {route.label!r} has samples ({count})"))
        if stats:
            checks += slo_checks(stats, slo, f"route {route.label!r} ")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("jtl", type=Path, help="JMeter CSV results file")
    parser.add_argument("--slo", type=Path, default=DEFAULT_SLO, help=f"SLO file (default {DEFAULT_SLO})")
    parser.add_argument("--min-samples", type=int, default=1, help="fail below this many samples (default 1)")
    parser.add_argument("--routes", type=Path, default=DEFAULT_ROUTES,
                        help=f"the routes file the plan ran; each label must have samples and meet "
                             f"the SLOs (default {DEFAULT_ROUTES})")
    args = parser.parse_args(argv)
    try:
        slo = load_slo(args.slo)
        routes = load_routes(args.routes)
        report = Report.of(read_jtl(args.jtl))
    except InputError as err:
        print(f"slo-gate: FAIL: {err}", file=sys.stderr)
        return 2
    print(f"{args.jtl}: {report.total.count} samples in {report.window_s:.1f} s")
    print(report.table())
    checks = verdicts(report, slo, args.min_samples, routes)
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    passed = all(ok for ok, _ in checks)
    print(f"slo-gate: {'PASS' if passed else 'FAIL'} (SLO file {args.slo}, routes file {args.routes})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
