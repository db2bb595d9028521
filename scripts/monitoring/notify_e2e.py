#!/usr/bin/env python3
"""The notification path against a real Alertmanager: routing, inhibition, the webhook receiver.

    notify_e2e.py --alertmanager BIN --workdir DIR

Starts monitoring/alert-receiver/receiver.py and Alertmanager on free 127.0.0.1 ports, Alertmanager
with the repository's alertmanager.yml, the receivers' URLs pointed at the receiver (same paths:
/alerts/<receiver>), then:

1. the receiver alone: health check, `--check` exit codes, 404 outside /alerts/, 400 on a body
   that is no notification;
2. inhibition (issue 13, defect 6), alerts posted to the API: a page holds back only the tickets
   that share its cause (the same SLO's slow burn, the p99 tickets during a fast latency burn,
   the same instance's tickets); a silenced BackendDown page no longer hides a latency ticket;
   pages are never held back; a page in one namespace never holds back another namespace's
   tickets (issue 12, defect 7);
3. delivery: a page reaches /alerts/page within its group_wait (10s) plus margin, and the receiver
   prints one line per alert with path, status, alertname, severity, instance and summary.

Takes about 15 s. Every process it starts is stopped again by PID; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from common import ALERT_PREFIX, RECEIVER_SCRIPT, SERVICE, Checks
from live_e2e import Processes, am_alerts, derive_alertmanager_config, free_port, http, log, wait_for

DELIVERY_DEADLINE_SECONDS = 40  # the page route's group_wait is 10s


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def check_receiver_alone(c: Checks, base: str) -> None:
    c.check(http("GET", base + "/-/healthy")[0] == 200, "receiver: GET /-/healthy answers 200")
    ok = subprocess.run([sys.executable, str(RECEIVER_SCRIPT), "--check", base + "/-/healthy"], timeout=10)
    c.check(ok.returncode == 0, "receiver --check URL exits 0 when the receiver answers")
    bad = subprocess.run([sys.executable, str(RECEIVER_SCRIPT), "--check", "http://127.0.0.1:9/-/healthy"],
                         timeout=10, capture_output=True)
    c.check(bad.returncode == 1, "receiver --check URL exits 1 when nothing answers")
    c.check(http("POST", base + "/other", body=b"{}")[0] == 404, "receiver: POST outside /alerts/ answers 404")
    c.check(http("POST", base + "/alerts/page", body=b"not json")[0] == 400,
            "receiver: a body that is no notification answers 400 (Alertmanager does not retry a 4xx)")


def check_inhibition(c: Checks, am: str) -> None:
    """Which tickets a page holds back (alertmanager.yml, inhibit_rules)."""
    now = datetime.now(timezone.utc)
    svc = f"e2e-{SERVICE}"

    def alert(name: str, severity: str, **labels: str) -> dict:
        return {"labels": {"alertname": name, "severity": severity, "service": svc, **labels},
                "annotations": {"summary": f"notify_e2e {name}"},
                "startsAt": iso(now), "endsAt": iso(now + timedelta(minutes=10))}

    down = f"{ALERT_PREFIX}Down"
    alerts = [
        alert("AvailabilityBudgetBurnFast", "page", slo="availability"),
        alert("AvailabilityBudgetBurnSlow", "ticket", slo="availability"),  # held: same SLO
        alert("LatencyBudgetBurnSlow", "ticket", slo="latency"),  # not held: another SLO
        alert(down, "page", instance="10.9.0.1:9464"),
        alert("HighLatencyP99", "ticket", endpoint="/api/v1/info"),  # not held by BackendDown
        alert("E2EInstanceTicket", "ticket", instance="10.9.0.1:9464"),  # held: same instance
        alert("E2EOtherInstanceTicket", "ticket", instance="10.9.0.2:9464"),  # not held
        alert("E2EOtherPage", "page", slo="availability", instance="10.9.0.1:9464"),  # pages: never held
        # Two namespaces of one cluster (issue 12, defect 7): production's latency page holds back
        # production's latency ticket, not staging's.
        alert("E2EProductionLatencyPage", "page", slo="latency", namespace="e2e-production"),
        alert("E2EProductionLatencyTicket", "ticket", slo="latency", namespace="e2e-production"),  # held
        alert("E2EStagingLatencyTicket", "ticket", slo="latency", namespace="e2e-staging"),  # not held
    ]
    status = http("POST", f"{am}/api/v2/alerts", body=json.dumps(alerts).encode())[0]
    c.check(status == 200, "Alertmanager accepts alerts on /api/v2/alerts", str(status))
    # The scenario of defect 6: the BackendDown page is silenced for the night.
    silence = {"matchers": [{"name": "alertname", "value": down, "isRegex": False, "isEqual": True},
                            {"name": "service", "value": svc, "isRegex": False, "isEqual": True}],
               "startsAt": iso(now), "endsAt": iso(now + timedelta(hours=8)), "createdBy": "notify_e2e",
               "comment": "a hung replica, silenced for the night"}
    status = http("POST", f"{am}/api/v2/silences", body=json.dumps(silence).encode())[0]
    c.check(status == 200, "Alertmanager accepts a silence", str(status))

    expected = {
        "AvailabilityBudgetBurnSlow": True, "LatencyBudgetBurnSlow": False, "HighLatencyP99": False,
        "E2EInstanceTicket": True, "E2EOtherInstanceTicket": False, "E2EOtherPage": False,
        "AvailabilityBudgetBurnFast": False,
        "E2EProductionLatencyTicket": True, "E2EStagingLatencyTicket": False, "E2EProductionLatencyPage": False,
    }

    def states() -> dict[str, dict]:
        out = {}
        for a in json.loads(http("GET", f"{am}/api/v2/alerts?" + urllib.parse.urlencode(
                {"filter": f'service="{svc}"'}))[2]):
            out[a["labels"]["alertname"]] = a["status"]
        return out

    deadline = time.monotonic() + 15
    got: dict[str, dict] = {}
    while time.monotonic() < deadline:
        got = states()
        if all(bool(got.get(name, {}).get("inhibitedBy")) == held for name, held in expected.items()) and \
                got.get(down, {}).get("silencedBy"):
            break
        time.sleep(0.5)
    c.check(bool(got.get(down, {}).get("silencedBy")), f"the {down} page is silenced", json.dumps(got.get(down)))
    why = {
        "AvailabilityBudgetBurnSlow": "the same SLO's slow burn is held back by its fast burn",
        "LatencyBudgetBurnSlow": "another SLO's ticket is not held back",
        "HighLatencyP99": f"a silenced {down} page does not hide an unrelated latency ticket (defect 6)",
        "E2EInstanceTicket": "a page about an instance holds back the tickets of that instance",
        "E2EOtherInstanceTicket": "... and not those of another instance",
        "E2EOtherPage": "a page is never held back",
        "AvailabilityBudgetBurnFast": "a page is never held back (the fast burn itself)",
        "E2EProductionLatencyTicket": "a namespace's page holds back the same SLO's ticket in that namespace",
        "E2EStagingLatencyTicket": "... and not the same SLO's ticket in another namespace (defect 7)",
        "E2EProductionLatencyPage": "a page in a namespace is never held back",
    }
    for name, held in expected.items():
        c.check(bool(got.get(name, {}).get("inhibitedBy")) == held, f"inhibition: {why[name]}",
                json.dumps(got.get(name)))


def check_delivery(c: Checks, am: str, receiver_log: Path) -> None:
    """A page goes to /alerts/page, and the receiver prints one readable line per alert."""
    now = datetime.now(timezone.utc)
    name = "E2EDeliveredPage"
    alerts = [{"labels": {"alertname": name, "severity": "page", "service": SERVICE, "instance": f"10.9.0.{i}:9464"},
               "annotations": {"summary": f"replica 10.9.0.{i} is on \"fire\"\nsecond line"},
               "startsAt": iso(now), "endsAt": iso(now + timedelta(minutes=10))} for i in (1, 2)]
    sent = time.monotonic()
    http("POST", f"{am}/api/v2/alerts", body=json.dumps(alerts).encode())
    lines: list[str] = []
    while time.monotonic() < sent + DELIVERY_DEADLINE_SECONDS:
        lines = [line for line in receiver_log.read_text().splitlines() if f" {name} " in line]
        if len(lines) >= 2:
            break
        time.sleep(0.5)
    after = time.monotonic() - sent
    log(f"page delivered to the receiver after {after:.1f}s: {lines}")
    c.check(len(lines) == 2, f"the receiver printed one line per alert of the page ({DELIVERY_DEADLINE_SECONDS}s)",
            str(lines))
    for i, line in zip((1, 2), sorted(lines)):
        want = (f"/alerts/page firing {name} severity=page instance=10.9.0.{i}:9464 "
                f'summary="replica 10.9.0.{i} is on \\"fire\\" second line"')
        c.check(line.endswith(want), f"receiver line: path, status, alertname, severity, instance, summary (10.9.0.{i})",
                f"{line!r}, want the end {want!r}")
    c.check(bool(am_alerts(am, name)), "the page is listed in Alertmanager's API")


def run(args: argparse.Namespace) -> int:
    c = Checks("notification path")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Processes(workdir)
    receiver_port, am_port = free_port(), free_port()
    receiver, am = f"http://127.0.0.1:{receiver_port}", f"http://127.0.0.1:{am_port}"
    try:
        procs.start("alert-receiver", [sys.executable, str(RECEIVER_SCRIPT), "--listen", f"127.0.0.1:{receiver_port}"])
        cfg = workdir / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(derive_alertmanager_config(f"127.0.0.1:{receiver_port}"), sort_keys=False))
        procs.start("alertmanager", [
            args.alertmanager, f"--config.file={cfg}", f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ])
        wait_for(receiver + "/-/healthy", 10, "alert-receiver")
        wait_for(am + "/-/ready", 20, "alertmanager")
        check_receiver_alone(c, receiver)
        check_inhibition(c, am)
        check_delivery(c, am, workdir / "alert-receiver.log")
    except Exception as e:  # a crash of the harness is a failure too, with the logs to explain it
        c.check(False, "notification test ran to the end", repr(e))
        for name in ("alert-receiver", "alertmanager"):
            print(f"--- last lines of {name}.log\n{procs.tail(name)}")
    finally:
        procs.stop_all()
    return c.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alertmanager", required=True)
    parser.add_argument("--workdir", required=True)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
