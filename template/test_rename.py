"""Unit tests of template/rename.py: python3 -m unittest discover -s template -p 'test_*.py'

The names here (widget, orders-api, billing) are examples, never the service's own name, so the
tests read the same before and after a rename. scripts/test-template.sh renames the real tree.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import unittest
from pathlib import Path

import rename
from rename import Renamer, Spellings, ambiguities, collisions, validate


def renamed(text: str, old: str = "widget", new: str = "orders-api", python: bool = False) -> str:
    return Renamer(old, new).text(text, python)[0]


class SpellingsTest(unittest.TestCase):
    def test_a_name_has_four_spellings(self):
        s = Spellings("orders-api")
        self.assertEqual((s.kebab, s.snake, s.camel, s.screaming), ("orders-api", "orders_api", "OrdersApi", "ORDERS_API"))


class ValidateTest(unittest.TestCase):
    def test_accepts_dns_labels_that_are_crate_names(self):
        for name in ("orders-api", "billing", "a1", "payments-v2", "x" * rename.MAX_LENGTH):
            self.assertIsNone(validate(name), name)

    def test_refuses_what_kubernetes_docker_or_cargo_would(self):
        for name in ("Orders", "orders_api", "9lives", "-api", "api-", "a--b", "orders.api", "", "ü",
                     "x" * (rename.MAX_LENGTH + 1), "fn", "test", "self", "proc-macro"):
            self.assertIsNotNone(validate(name), name)


class RenamerTest(unittest.TestCase):
    def test_each_spelling_becomes_the_same_spelling_of_the_new_name(self):
        cases = {
            'up{job="widget"} == 0': 'up{job="orders-api"} == 0',
            "deploy/charts/widget/values.yaml": "deploy/charts/orders-api/values.yaml",
            "slo-widget-sli-short": "slo-orders-api-sli-short",
            "use widget::startup::Application;": "use orders_api::startup::Application;",
            'const LOG: &str = "widget::http";': 'const LOG: &str = "orders_api::http";',
            "widget_bin release": "orders_api_bin release",
            'kill "$widget_pid"': 'kill "$orders_api_pid"',
            "CARGO_BIN_EXE_widget": "CARGO_BIN_EXE_orders_api",
            "- alert: WidgetDown": "- alert: OrdersApiDown",
            "image: widget:${WIDGET_TAG:-local}": "image: orders-api:${ORDERS_API_TAG:-local}",
        }
        for before, after in cases.items():
            self.assertEqual(renamed(before), after, before)

    def test_leaves_foreign_camel_case_other_words_and_kept_lines(self):
        for text in ("backendRefs: [widgetRefs]", "widgets", "midwidget", "Widgetry",
                     "  widget:  # the Ingress API field (rename: keep)"):
            self.assertEqual(renamed(text), text)

    def test_python_names_are_identifiers_strings_are_names(self):
        source = 'widget = build("widget")\nprint(args.widget, f"widget-{i}")  # widget\n'
        self.assertEqual(renamed(source, python=True),
                         'orders_api = build("orders-api")\nprint(args.orders_api, f"orders-api-{i}")  # orders-api\n')

    def test_a_multi_word_name_maps_by_its_spelling_alone(self):
        text = 'orders-api orders_api OrdersApiDown ORDERS_API_TAG "orders-api::x"'
        self.assertEqual(renamed(text, "orders-api", "billing"), 'billing billing BillingDown BILLING_TAG "billing::x"')

    def test_renaming_there_and_back_gives_the_original(self):
        text = 'job="widget" use widget::x widget_bin WidgetDown WIDGET_TAG widgetRefs\n'
        self.assertEqual(renamed(renamed(text), "orders-api", "widget"), text)

    def test_counts_what_it_changed(self):
        self.assertEqual(Renamer("widget", "billing").text("widget widgetRefs WidgetDown")[1], 2)


class TreeTest(unittest.TestCase):
    """Checks on a small git repository written for each test."""

    def make_tree(self, files: dict[str, str]) -> Path:
        root = Path(tempfile.mkdtemp())
        self.addCleanup(subprocess.run, ["rm", "-rf", str(root)])
        files = {"app/Cargo.toml": '[package]\nname = "widget"\n', **files}
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "-A"], cwd=root, check=True)
        return root

    def snapshot(self, root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*")
                if p.is_file() and ".git" not in p.parts}

    def test_ambiguous_spellings_are_found_where_they_apply(self):
        root = self.make_tree({
            "a.md": "Widget / SLO\nthe widgets\n",
            "b.sh": 'widget=1\necho "$widget"\n',
            "c.rs": 'let widget = "widget";\nuse widget::x; // widget\n',
            "d.py": "print(args.widget)\n",
            "e.yaml": "level: info,widget=debug\nhost: api.widget\n",
            "f.txt": "plain widget, widget_x, WidgetDown\n",
        })
        found = ambiguities(root, rename.tracked_files(root), "widget")
        where = sorted(line.split(":", 2)[0] + ":" + line.split(":", 2)[1] for line in found)
        self.assertEqual(where, ["a.md:1", "a.md:2", "b.sh:1", "b.sh:2", "c.rs:1", "e.yaml:1", "e.yaml:2"])

    def test_collisions_ignore_the_command_example(self):
        root = self.make_tree({"README.md": "make rename NAME=billing\n", "x.yaml": "job: metrics\n"})
        files = rename.tracked_files(root)
        self.assertEqual(collisions(root, files, "billing"), [])
        self.assertEqual(len(collisions(root, files, "metrics")), 1)

    def test_rename_moves_paths_rewrites_text_and_is_idempotent(self):
        root = self.make_tree({
            "deploy/charts/widget/Chart.yaml": "name: widget\n",
            "docs/runbooks/WidgetDown.md": "# WidgetDown\n",
            "LICENSE": "Copyright widget\n",
        })
        self.assertEqual(rename.rename(root, "billing", out=io.StringIO()), 0)
        after = self.snapshot(root)
        self.assertEqual(after["deploy/charts/billing/Chart.yaml"], "name: billing\n")
        self.assertEqual(after["docs/runbooks/BillingDown.md"], "# BillingDown\n")
        self.assertEqual(after["LICENSE"], "Copyright widget\n")
        self.assertFalse((root / "deploy/charts/widget").exists(), "the old chart directory is removed")
        out = io.StringIO()
        self.assertEqual(rename.rename(root, "billing", out=out), 0)
        self.assertIn("already named 'billing'", out.getvalue())
        self.assertEqual(self.snapshot(root), after)

    def test_a_refused_name_changes_nothing(self):
        root = self.make_tree({"x.yaml": "job: widget\nmetrics: on\n", "y.md": "The Widget\n"})
        before = self.snapshot(root)
        for name, why in (("Bad_Name", "DNS-1123"), ("metrics", "already used"), ("billing", "cannot be mapped")):
            out = io.StringIO()
            self.assertEqual(rename.rename(root, name, out=out), 2, name)
            self.assertIn(why, out.getvalue())
            self.assertEqual(self.snapshot(root), before, name)


class MaxLengthTest(unittest.TestCase):
    """MAX_LENGTH leaves room for the suffixes the real tree derives from the name."""

    root = Path(__file__).resolve().parents[1]

    def test_dashboard_uids_fit_grafanas_40_characters(self):
        name = rename.current_name(self.root)
        for path in (self.root / "monitoring/grafana/dashboards").glob("*.json"):
            suffix = json.loads(path.read_text())["uid"].removeprefix(name)
            self.assertLessEqual(rename.MAX_LENGTH + len(suffix), 40, path.name)

    def test_application_names_fit_kubernetes_63_characters(self):
        name = rename.current_name(self.root)
        for path in (self.root / "deploy/argocd").glob("application-*.yaml"):
            app = next(line for line in path.read_text().splitlines() if line.startswith("  name: "))
            suffix = app.removeprefix("  name: ").removeprefix(name)
            self.assertLessEqual(rename.MAX_LENGTH + len(suffix), 63, path.name)


if __name__ == "__main__":
    unittest.main()
