"""Unit tests of the game day's harness (seconds, no process started): the scenario table matches
the rules, the receiver's lines are read right, compose is mapped right, nginx.conf changes in one
line only. scripts/gameday.sh runs them before the stacks:

    python3 -m unittest discover -s monitoring/gameday -p 'test_*.py'
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import components
import observe
import scenarios
from common import ALERT_PREFIX, load_rules


class ScenarioTable(unittest.TestCase):
    def test_every_expected_alert_is_a_rule(self):
        rules = {r.name: r for r in load_rules() if r.kind == "alert"}
        for sc in scenarios.SCENARIOS:
            for alert in sc.expect:
                with self.subTest(scenario=sc.name, alert=alert.name):
                    self.assertIn(alert.name, rules, "expected by the game day, not in monitoring/prometheus/rules")
                    self.assertEqual(rules[alert.name].labels.get("severity"), alert.severity)
            for name in sc.allowed + tuple(n for n, _ in sc.not_waited):
                with self.subTest(scenario=sc.name, allowed=name):
                    self.assertIn(name, rules)

    def test_every_action_exists_and_stacks_are_known(self):
        import stack
        for sc in scenarios.SCENARIOS:
            self.assertIn(sc.action, stack.ACTIONS, sc.name)
            self.assertIn(sc.stack, scenarios.STACKS)
            for alert in sc.expect:
                self.assertIn(alert.seen_in, ("receiver", "alertmanager", "prometheus"))

    def test_names_come_from_the_service_name(self):
        self.assertTrue(scenarios.DOWN.startswith(ALERT_PREFIX))
        self.assertTrue(scenarios.REPLICA_LOST.startswith(ALERT_PREFIX))


class ReceiverLines(unittest.TestCase):
    def test_a_firing_line(self):
        line = ('2025-06-01T12:00:00Z /alerts/page firing XDown severity=page instance=10.0.0.2:9464 '
                'summary="x instance=10.0.0.2:9464 is down"')
        n = observe.parse_receiver_line(line, 1.0, 2.0)
        self.assertEqual((n.receiver, n.status), ("page", "firing"))
        self.assertEqual(n.alerts[0].alertname, "XDown")
        self.assertEqual(n.alerts[0].labels, {"alertname": "XDown", "severity": "page", "instance": "10.0.0.2:9464"})

    def test_no_instance_and_other_lines(self):
        n = observe.parse_receiver_line('T /alerts/ticket resolved Y severity=ticket instance=- summary=""', 1, 2)
        self.assertEqual(n.alerts[0].labels, {"alertname": "Y", "severity": "ticket"})
        self.assertIsNone(observe.parse_receiver_line("T alert-receiver listening on 0.0.0.0:5001", 1, 2))
        self.assertIsNone(observe.parse_receiver_line("T /alerts/page unreadable notification: x", 1, 2))

    def test_episodes(self):
        def n(t, status, instance="a"):
            return observe.parse_receiver_line(f"T /alerts/page {status} X severity=page instance={instance}", t, t)
        once = observe.episodes([n(1, "firing"), n(2, "firing", "b"), n(3, "firing"), n(4, "resolved")])
        self.assertEqual(sorted(once.values()), [["firing"], ["firing", "resolved"]])
        twice = observe.episodes([n(1, "firing"), n(2, "resolved"), n(3, "firing")])
        self.assertEqual(list(twice.values()), [["firing", "resolved", "firing"]])


class Compose(unittest.TestCase):
    def test_interpolation_takes_the_defaults(self):
        self.assertEqual(components.interpolate("${A:-x}/${B-y}/${C}/$$d"), "x/y//$d")

    def test_container_paths_map_to_host_paths(self):
        svc = {"volumes": ["./monitoring/prometheus:/etc/prometheus:ro", "data:/prometheus"]}
        stack_dir = Path("/nonexistent-stack")
        mounts = [components.Mount("/etc/prometheus", Path("/repo/monitoring/prometheus")),
                  components.Mount("/prometheus", stack_dir / "volumes" / "data")]
        args = components.map_args(["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                                    "--cluster.listen-address=", "/etc/prometheus/x"], mounts)
        self.assertEqual(args, ["--config.file=/repo/monitoring/prometheus/prometheus.yml",
                                f"--storage.tsdb.path={stack_dir}/volumes/data", "--cluster.listen-address=",
                                "/repo/monitoring/prometheus/x"])
        self.assertTrue(svc)

    def test_the_services_the_stack_runs_are_in_compose(self):
        services = components.compose_services()
        for name in (components.SERVICE, "lb", "prometheus", "alertmanager", components.RECEIVER_SERVICE,
                     components.BLACKBOX_SERVICE):
            self.assertIn(name, services)

    def test_nginx_conf_changes_in_one_line(self):
        derived, change = components.derive_nginx_conf("127.0.0.5")
        original = components.NGINX_CONF.read_text().splitlines()
        body = [line for line in derived.splitlines() if not line.startswith("# DERIVED") and
                not line.startswith("# only `listen")]
        diff = [(a, b) for a, b in zip(original, body) if a != b]
        self.assertEqual(len(original), len(body))
        self.assertEqual(diff, [("    listen 4000;", "    listen 127.0.0.5:4000;")])
        self.assertIn("resolver 127.0.0.11", derived)

    def test_dnsmasq_runs_as_root_when_the_services_do(self):
        # A clone under /root or in a 0700 directory: dnsmasq dropping to `nobody` could not
        # read its hosts directory and answered NXDOMAIN for every service (seen in a clean
        # clone from `mktemp -d`).
        class Recorded:
            def start(self, name, argv, **_):
                self.argv = argv
        with tempfile.TemporaryDirectory() as tmp:
            for as_root, user in ((True, "--user=root"), (False, "--user=nobody")):
                procs = Recorded()
                components.Dns(Path(tmp), procs).start(as_root=as_root)
                self.assertIn(user, procs.argv)


if __name__ == "__main__":
    unittest.main()
