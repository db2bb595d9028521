"""Unit tests for slo_gate.py on synthetic .jtl files: python3 -m unittest discover -s jmeter"""
from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from unittest import mock
from pathlib import Path

import slo_gate

SLO_YAML = """\
# the shape of monitoring/slo.yaml, extra keys included
service: backend
selector: job="backend", endpoint!~"/api/v1/(health|ready)"

slos:
  availability:
    objective: 0.999        # => max error ratio 0.001
    window: 30d
  latency:
    objective: 0.99         # => the p99 must be <= threshold_seconds
    threshold_seconds: 0.15
    window: 30d

alerting:
  page:                     # 2% of a 30d budget in 1h
    for: 2m
    windows:
      - {burn_rate: 14.4, long: 1h, short: 5m}
      - {burn_rate: 6, long: 6h, short: 30m}
"""
# What JMeter 2.13 writes with jmeter/jmeter.properties (no sentBytes, no IdleTime)
HEADER_2_13 = ("timeStamp,elapsed,label,responseCode,responseMessage,threadName,dataType,success,"
               "failureMessage,bytes,grpThreads,allThreads,URL,Latency,Connect")
# JMeter 5.x default CSV columns
HEADER_5 = ("timeStamp,elapsed,label,responseCode,responseMessage,threadName,dataType,success,"
            "failureMessage,bytes,sentBytes,grpThreads,allThreads,URL,Latency,IdleTime,Connect")
SLOW = "The operation lasted too long: It took 180 milliseconds, but should not have lasted longer than 150 milliseconds."
ROUTES_HEADER = "label;method;path;weight;status;body_regex;request_body"
HERE = Path(slo_gate.__file__).resolve().parent
# What the service's /api/v1/info answers (app/src/routes/info.rs)
INFO_BODY = ('{"name":"Linux","release":"6.1.0","totalMem":8589934592,"freeMem":4294967296,'
             '"hostname":"vm","arch":"x86_64","cpus":2,"uptime":612,"version":"0.1.0"}')


def route_line(label="health", method="GET", path=None, weight=1, status=200, body_regex='"success":true',
               request_body=""):
    return ";".join(map(str, (label, method, path or f"/api/v1/{label}", weight, status, body_regex, request_body)))


def row_2_13(ts, elapsed, label="health", code="200", success=True, message=""):
    return (f'{ts},{elapsed},{label},{code},OK,users 1-1,text,{str(success).lower()},"{message}",'
            f"271,1,1,http://127.0.0.1:4000/api/v1/{label},{elapsed},0")


def row_5(ts, elapsed, label="health", code="200", success=True, message=""):
    return (f'{ts},{elapsed},{label},{code},OK,users 1-1,text,{str(success).lower()},"{message}",'
            f"271,120,1,1,http://127.0.0.1:4000/api/v1/{label},{elapsed},0,0")


class GateTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.slo = self.write("slo.yaml", SLO_YAML)

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        return path

    def jtl(self, header: str | None, rows: list[str]) -> Path:
        return self.write("results.jtl", "\n".join(([header] if header else []) + rows) + "\n")

    def routes(self, *lines: str, name: str = "routes.csv") -> Path:
        return self.write(name, "\n".join([ROUTES_HEADER, *lines]) + "\n")

    def gate(self, *args, routes: Path | None = None) -> tuple[int, str]:
        """The gate with the test's SLO file and, unless given, a routes file of `health` alone."""
        routes = routes or self.routes(route_line("health"), name="health-only.csv")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = slo_gate.main([*map(str, args), "--slo", str(self.slo), "--routes", str(routes)])
        return code, out.getvalue()


class PercentileTest(unittest.TestCase):
    def test_nearest_rank_on_one_to_hundred(self):
        values = list(range(100, 0, -1))
        self.assertEqual(slo_gate.percentile(values, 0.50), 50)
        self.assertEqual(slo_gate.percentile(values, 0.95), 95)
        self.assertEqual(slo_gate.percentile(values, 0.99), 99)
        self.assertEqual(slo_gate.percentile(values, 1.0), 100)

    def test_rank_rounds_up_between_samples(self):
        # 0.99 * 10 = 9.9 -> the 10th value: one slow sample in ten is over the p99
        self.assertEqual(slo_gate.percentile([10] * 9 + [500], 0.99), 500)
        self.assertEqual(slo_gate.percentile([7], 0.5), 7)

    def test_float_noise_does_not_skip_a_rank(self):
        # 0.545 * 200 is 109.00000000000001 in floating point; the rank is 109, not 110
        values = [1] * 109 + [1000] * 91
        self.assertEqual(slo_gate.percentile(values, 0.545), 1)


class ReadJtlTest(GateTest):
    def test_reads_the_2_13_csv_format(self):
        samples = slo_gate.read_jtl(self.jtl(HEADER_2_13, [row_2_13(1000, 5), row_2_13(1010, 7, "info")]))
        self.assertEqual([(s.label, s.elapsed_ms, s.success) for s in samples],
                         [("health", 5, True), ("info", 7, True)])

    def test_reads_the_5_x_csv_format(self):
        samples = slo_gate.read_jtl(self.jtl(HEADER_5, [row_5(1000, 5, code="503", success=False, message="x")]))
        self.assertEqual((samples[0].response_code, samples[0].is_error), ("503", True))

    def test_reads_a_headerless_file_in_default_column_order(self):
        samples = slo_gate.read_jtl(self.jtl(None, ["1000,12,info,200,OK,users 1-1,text,true,271,1,1,12"]))
        self.assertEqual((samples[0].label, samples[0].elapsed_ms, samples[0].failure_message), ("info", 12, None))

    def test_failure_messages_with_commas_quotes_and_newlines(self):
        message = 'Test failed: text expected to contain /""name"":""/,\nsecond line'
        samples = slo_gate.read_jtl(self.jtl(HEADER_2_13, [row_2_13(1, 2, "info", "404", False, message)]))
        self.assertTrue(samples[0].failure_message.startswith('Test failed: text expected to contain /"name":"/,\n'))

    def test_missing_empty_header_only_and_xml_files_are_input_errors(self):
        for path in (self.dir / "nope.jtl", self.write("empty.jtl", ""),
                     self.write("header.jtl", HEADER_5 + "\n"),
                     self.write("xml.jtl", '<?xml version="1.0"?>\n<testResults/>\n')):
            with self.subTest(path=path.name), self.assertRaises(slo_gate.InputError):
                slo_gate.read_jtl(path)

    def test_a_garbled_row_is_an_input_error(self):
        with self.assertRaises(slo_gate.InputError):
            slo_gate.read_jtl(self.jtl(HEADER_5, ["not,a,sample"]))


class ErrorClassificationTest(unittest.TestCase):
    def sample(self, code, success, message):
        return slo_gate.Sample(0, 180, "info", code, success, message)

    def test_a_slow_but_correct_response_is_not_an_availability_error(self):
        self.assertFalse(self.sample("200", False, SLOW).is_error)

    def test_a_failed_response_is_an_error_whatever_else_failed(self):
        self.assertTrue(self.sample("500", False, SLOW).is_error)
        self.assertTrue(self.sample("404", False, "Test failed: code expected to equal /200/").is_error)
        self.assertTrue(self.sample("Non HTTP response code: java.net.ConnectException", False, "").is_error)
        self.assertTrue(self.sample("200", False, "Test failed: text expected to contain /x/").is_error)

    def test_without_the_message_column_a_failed_sample_is_an_error(self):
        self.assertTrue(self.sample("200", False, None).is_error)
        self.assertFalse(self.sample("200", True, None).is_error)


class SloFileTest(GateTest):
    def test_reads_objectives_and_threshold(self):
        slo = slo_gate.load_slo(self.slo)
        self.assertAlmostEqual(slo.max_error_ratio, 0.001)
        self.assertEqual((slo.latency_quantile, slo.latency_threshold_ms), (0.99, 150))

    def test_reads_the_slo_file_without_pyyaml(self):
        with mock.patch.dict(sys.modules, {"yaml": None}):  # `import yaml` raises ImportError
            self.assertEqual(slo_gate.load_slo(self.slo), slo_gate.Slo(0.001, 0.99, 150))

    def test_the_fallback_parser_agrees_with_pyyaml(self):
        parsed = slo_gate.parse_simple_yaml(SLO_YAML)
        self.assertEqual(parsed["slos"]["latency"], {"objective": 0.99, "threshold_seconds": 0.15, "window": "30d"})
        self.assertEqual(parsed["service"], "backend")
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML not installed")
        self.assertEqual(parsed["slos"], yaml.safe_load(SLO_YAML)["slos"])

    def test_missing_or_invalid_slo_files_are_input_errors(self):
        for name, text in (("missing.yaml", None), ("keys.yaml", "slos:\n  availability:\n    objective: 0.999\n"),
                           ("range.yaml", SLO_YAML.replace("0.999", "99.9"))):
            path = self.write(name, text) if text is not None else self.dir / name
            with self.subTest(name), self.assertRaises(slo_gate.InputError):
                slo_gate.load_slo(path)


class RoutesFileTest(GateTest):
    def test_reads_every_column(self):
        routes = slo_gate.load_routes(self.routes(
            route_line("health"),
            route_line("note", "PUT", "/api/v1/notes/7", 2, 201, '"id":7', '{"title":"milk","done":false}')))
        self.assertEqual(routes[1], slo_gate.Route("note", "PUT", "/api/v1/notes/7", 2, "201", '"id":7',
                                                   '{"title":"milk","done":false}'))
        self.assertEqual([r.label for r in routes], ["health", "note"])

    def test_a_status_can_list_alternatives(self):
        # a PUT that creates (201) the first time and replaces (200) afterwards
        routes = slo_gate.load_routes(self.routes(route_line("note", "PUT", status="200|201", request_body="{}")))
        self.assertEqual(routes[0].status, "200|201")

    def test_lines_the_plan_would_misread_are_input_errors(self):
        # JMeter sends every line after the header, and keeps the previous line's values for
        # missing fields: each of these would be a wrong or a repeated request, not an error.
        cases = {
            "no header": [route_line("health")],
            "comment": ["# a comment", route_line("health")],
            "blank line": ["", route_line("health")],
            "a GET line without its final ';'": [route_line("health")[:-1]],
            "a ';' inside a field": [route_line("note", "PUT", request_body='{"a":";"}')],
            "label": [route_line("two words")],
            "label TOTAL": [route_line("TOTAL")],
            "method": [route_line(method="get")],
            "path": [route_line(path="api/v1/health")],
            "weight 0": [route_line(weight=0)],
            "weight x": [route_line(weight="x")],
            "status": [route_line(status=20)],
            "status list": [route_line(status="200,201")],
            "body_regex": [route_line(body_regex="(unclosed")],
            "GET with a body": [route_line(request_body="{}")],
            "request_body not JSON": [route_line("note", "PUT", request_body="{title:1}")],
            "label twice": [route_line("health"), route_line("health")],
            "no route": [],
        }
        for case, lines in cases.items():
            path = self.write(f"{case}.csv", "\n".join(
                lines if case == "no header" else [ROUTES_HEADER, *lines]) + "\n")
            with self.subTest(case), self.assertRaises(slo_gate.InputError):
                slo_gate.load_routes(path)

    def test_a_byte_order_mark_is_refused_by_name(self):
        # JMeter would call the first column "\ufefflabel", and ${label} would not exist
        with self.assertRaisesRegex(slo_gate.InputError, "byte order mark"):
            slo_gate.load_routes(self.write("bom.csv", "\ufeff" + ROUTES_HEADER + "\n" + route_line() + "\n"))

    def test_the_error_names_the_line(self):
        with self.assertRaisesRegex(slo_gate.InputError, r"routes.csv:3: weight '0'"):
            slo_gate.load_routes(self.routes(route_line("health"), route_line("info", weight=0)))

    def test_a_bad_routes_file_exits_2(self):
        code, out = self.gate(self.jtl(HEADER_5, [row_5(1000, 5)]), routes=self.write("bad.csv", "label\n"))
        self.assertEqual(code, 2)
        self.assertIn("the first line must be the header row", out)


class RepositoryDefaultsTest(unittest.TestCase):
    def test_the_plan_and_dashboard_defaults_are_the_slo_threshold(self):
        # run.sh passes the SLO file's threshold; runs without it (compose) use these defaults
        ms = f"{slo_gate.load_slo(slo_gate.DEFAULT_SLO).latency_threshold_ms:g}"
        self.assertIn(f"${{__P(latency_threshold_ms,{ms})}}", (HERE / "load_test.jmx").read_text(encoding="utf-8"))
        self.assertIn(f"\njmeter.reportgenerator.apdex_satisfied_threshold={ms}\n",
                      (HERE / "jmeter.properties").read_text(encoding="utf-8"))

    def test_the_plan_reads_the_routes_file_the_gate_reads(self):
        plan = ET.parse(HERE / "load_test.jmx")
        csv_set = plan.find(".//CSVDataSet")
        props = {e.get("name"): (e.text or "") for e in csv_set}
        # the default file is the gate's default, beside the plan (compose mounts jmeter/ whole)
        self.assertEqual(props["filename"], f"${{__P(routes,{slo_gate.DEFAULT_ROUTES.name})}}")
        self.assertEqual(slo_gate.DEFAULT_ROUTES.parent, HERE)
        self.assertEqual(props["delimiter"], slo_gate.ROUTE_SEPARATOR)
        self.assertEqual(props["variableNames"], "")  # from the header row, which the gate insists on
        self.assertEqual(props["quotedData"], "false")  # '"' is an ordinary character in the file
        used = set(re.findall(r"\$\{(\w+)\}", (HERE / "load_test.jmx").read_text(encoding="utf-8")))
        self.assertEqual(used & set(slo_gate.ROUTE_COLUMNS), set(slo_gate.ROUTE_COLUMNS))

    def test_the_repository_routes_keep_the_original_checks_and_mix(self):
        routes = {r.label: r for r in slo_gate.load_routes(slo_gate.DEFAULT_ROUTES)}
        self.assertEqual({label: (r.method, r.path, r.status) for label, r in routes.items()},
                         {"health": ("GET", "/api/v1/health", "200"), "info": ("GET", "/api/v1/info", "200")})
        total = sum(r.weight for r in routes.values())
        self.assertEqual({label: r.weight / total for label, r in routes.items()}, {"health": 0.25, "info": 0.75})
        # JMeter's Perl 5 regular expressions and Python's agree on lookaheads, classes and .*
        self.assertRegex('{"success":true}', routes["health"].body_regex)
        self.assertNotRegex('{"success":false}', routes["health"].body_regex)
        info = routes["info"].body_regex
        self.assertRegex(INFO_BODY, info)
        for field in ("name", "release", "totalMem", "freeMem", "hostname", "arch", "cpus", "uptime", "version"):
            with self.subTest(field):
                self.assertNotRegex(INFO_BODY.replace(f'"{field}"', '"other"'), info)  # every field
        self.assertNotRegex(INFO_BODY.replace('"cpus":2', '"cpus":"2"'), info)  # numbers as numbers


class GateVerdictTest(GateTest):
    def run_rows(self, rows, *extra):
        return self.gate(self.jtl(HEADER_5, rows), *extra)

    def test_passes_a_clean_run_and_prints_the_summary(self):
        rows = [row_5(1000 + i, 10 + i % 5, "info" if i % 4 else "health") for i in range(1000)]
        routes = self.routes(route_line("health"), route_line("info", weight=3))
        code, out = self.gate(self.jtl(HEADER_5, rows), routes=routes)
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"health\s+250\s")
        self.assertRegex(out, r"TOTAL\s+1000\s+[\d.]+\s+12\s+14\s+14\s+14\s+0\s+0\.000")
        self.assertIn("PASS  route 'info' has samples (750)", out)
        self.assertIn("PASS  route 'health' latency: p99 14 ms <= 150 ms", out)
        self.assertIn("slo-gate: PASS", out)

    def test_error_ratio_at_the_budget_passes_and_above_it_fails(self):
        ok = [row_5(1000 + i, 10) for i in range(999)]
        bad = row_5(2000, 10, code="500", success=False, message="Test failed: code expected to equal /200/")
        self.assertEqual(self.run_rows(ok + [bad])[0], 0)  # 1 / 1000 = 0.1 %
        code, out = self.run_rows(ok[:-1] + [bad, bad])      # 2 / 1000
        self.assertEqual(code, 1)
        self.assertIn("FAIL  availability: error ratio 0.200 %", out)

    def test_every_404_fails_the_gate(self):
        rows = [row_5(1000 + i, 3, code="404", success=False, message="Test failed") for i in range(50)]
        code, out = self.run_rows(rows)
        self.assertEqual(code, 1)
        self.assertIn("error ratio 100.000 %", out)

    def test_latency_quantile_at_the_threshold_passes_and_above_it_fails(self):
        fast = [row_5(1000 + i, 20) for i in range(99)]
        self.assertEqual(self.run_rows(fast + [row_5(2000, 150)])[0], 0)
        self.assertEqual(self.run_rows(fast + [row_5(2000, 151, success=False, message=SLOW)])[0], 0)  # 1 %: allowed
        code, out = self.run_rows(fast[:-1] + [row_5(2000, 151, success=False, message=SLOW)] * 2)
        self.assertEqual(code, 1)
        self.assertIn("FAIL  latency: p99 151 ms <= 150 ms", out)
        self.assertIn("PASS  availability", out)  # slow samples are not availability errors

    def test_a_route_in_the_routes_file_without_samples_fails(self):
        # the plan ran an older list, or the line never reached JMeter: the route is not covered
        rows = [row_5(1000 + i, 5, "health") for i in range(100)]
        routes = self.routes(route_line("health"), route_line("ready"))
        code, out = self.gate(self.jtl(HEADER_5, rows), routes=routes)
        self.assertEqual(code, 1, out)
        self.assertIn("FAIL  route 'ready' has samples (0)", out)
        self.assertIn("PASS  availability", out)  # the run as a whole is fine

    def test_the_repository_routes_file_is_the_default(self):
        code, out = self.gate(self.jtl(HEADER_5, [row_5(1000, 5, "health")]), routes=slo_gate.DEFAULT_ROUTES)
        self.assertEqual(code, 1)
        self.assertIn("FAIL  route 'info' has samples (0)", out)

    def test_a_rare_route_breaking_the_error_budget_fails_though_the_total_passes(self):
        rows = [row_5(1000 + i, 5) for i in range(2000)]
        rows += [row_5(3000 + i, 5, "rare") for i in range(9)]
        rows.append(row_5(4000, 5, "rare", "500", False, "Test failed: code expected to equal /200/"))
        code, out = self.gate(self.jtl(HEADER_5, rows), routes=self.routes(route_line("health"), route_line("rare")))
        self.assertEqual(code, 1, out)
        self.assertIn("PASS  availability: error ratio 0.050 %", out)
        self.assertIn("FAIL  route 'rare' availability: error ratio 10.000 %", out)

    def test_a_rare_route_breaking_the_latency_objective_fails_though_the_total_passes(self):
        rows = [row_5(1000 + i, 5) for i in range(2000)]
        rows += [row_5(3000 + i, 5, "rare") for i in range(8)]
        rows += [row_5(4000 + i, 400, "rare", success=False, message=SLOW) for i in range(2)]
        code, out = self.gate(self.jtl(HEADER_5, rows), routes=self.routes(route_line("health"), route_line("rare")))
        self.assertEqual(code, 1, out)
        self.assertIn("PASS  latency: p99 5 ms", out)
        self.assertIn("FAIL  route 'rare' latency: p99 400 ms <= 150 ms", out)

    def test_too_few_samples_fail(self):
        self.assertEqual(self.run_rows([row_5(1000, 5)], "--min-samples", "2")[0], 1)

    def test_missing_or_empty_results_exit_2(self):
        self.assertEqual(self.gate(self.dir / "none.jtl")[0], 2)
        self.assertEqual(self.gate(self.write("empty.jtl", ""))[0], 2)

    def test_rps_uses_the_whole_run_window(self):
        # 11 samples starting 0..10 s apart, each 1 s long: window 11 s -> 1.0 rps
        rows = [row_5(1_000_000 + 1000 * i, 1000) for i in range(11)]
        report = slo_gate.Report.of(slo_gate.read_jtl(self.jtl(HEADER_5, rows)))
        self.assertEqual(report.window_s, 11.0)
        self.assertIn("     1.0", report.table().splitlines()[-1])


if __name__ == "__main__":
    unittest.main()
