"""What a person would see: Prometheus' and Alertmanager's alerts over time, and the notifications
the webhook receiver printed, each with the moment it was seen.

A Watcher thread polls Prometheus (/api/v1/alerts) and Alertmanager (/api/v2/alerts) every
POLL_SECONDS and keeps every state change; the receiver's stdout is read line by line and every
notification is timestamped when its line arrives. Times are time.monotonic() of the stack.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

POLL_SECONDS = 2.0


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0,
         content_type: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str, timeout: float = 5.0):
    status, body = http("GET", url, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def prom_query(prom: str, expr: str) -> list[dict]:
    data = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if data.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {data.get('error')}")
    return data["data"]["result"]


def prom_value(prom: str, expr: str) -> float | None:
    """The first sample's value, or None without a sample."""
    result = prom_query(prom, expr)
    return float(result[0]["value"][1]) if result else None


def label_key(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertstate")


# ------------------------------------------------------------------------------- notifications
@dataclass
class Delivered:
    """One alert inside one notification."""

    alertname: str
    status: str            # firing | resolved
    fingerprint: str
    labels: dict


@dataclass
class Notification:
    t: float               # monotonic, when the receiver printed it
    wall: float
    receiver: str          # the webhook path's last part: page, ticket, default
    status: str
    alerts: list[Delivered] = field(default_factory=list)
    raw: str = ""


_PATH_RECEIVER = re.compile(r"/alerts/([A-Za-z0-9_.-]+)")


# One line per alert of a notification (monitoring/alert-receiver/receiver.py):
#   2025-06-01T12:00:00Z /alerts/page firing BackendDown severity=page instance=10.0.0.2:9464 summary="..."
_LINE = re.compile(r"^\S+ (?P<path>/\S+) (?P<status>firing|resolved) (?P<alertname>\S+) (?P<labels>.*)$")
_FIELD = re.compile(r'(\w+)=("(?:\\.|[^"\\])*"|\S+)')


def parse_receiver_line(line: str, t: float, wall: float) -> Notification | None:
    """One line of the webhook receiver's stdout: one alert of one notification, or None."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    fields = {k: v for k, v in _FIELD.findall(m.group("labels")) if k != "summary"}
    labels = {"alertname": m.group("alertname"), **{k: v for k, v in fields.items() if v != "-"}}
    path = m.group("path")
    receiver = _PATH_RECEIVER.search(path)
    alert = Delivered(m.group("alertname"), m.group("status"), label_key(labels), labels)
    return Notification(t, wall, receiver.group(1) if receiver else path, m.group("status"), [alert], line.strip())


def episodes(notifications: list[Notification]) -> dict[str, list[str]]:
    """Per alert (alertname + fingerprint): its delivered statuses in order, repeats collapsed.

    ["firing", "resolved"] is one incident, paged once and resolved once; ["firing"] is still
    firing; ["firing", "resolved", "firing"] is a resolve followed by a second page.
    """
    seq: dict[str, list[str]] = {}
    for n in sorted(notifications, key=lambda n: n.t):
        for a in n.alerts:
            key = f"{a.alertname}/{a.fingerprint}"
            s = seq.setdefault(key, [])
            if not s or s[-1] != a.status:
                s.append(a.status)
    return seq


# ------------------------------------------------------------------------------- the watcher
@dataclass
class Change:
    t: float
    source: str            # prometheus | alertmanager
    alertname: str
    key: str               # the alert's labels
    state: str             # prometheus: pending, firing, inactive; alertmanager: active, suppressed, gone


class Watcher(threading.Thread):
    """Polls Prometheus and Alertmanager; keeps every alert state change, and the notifications."""

    def __init__(self, prom: str, am: str, log):
        super().__init__(daemon=True, name="watcher")
        self.prom, self.am, self.log = prom, am, log
        self.changes: list[Change] = []
        self.notifications: list[Notification] = []
        self.receiver_lines = 0
        self._current: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.poll_errors: dict[str, int] = {}

    # --- the receiver's stdout
    def feed_receiver(self, stream, logfile) -> threading.Thread:
        def run():
            for raw in iter(stream.readline, b""):
                t, wall = time.monotonic(), time.time()
                line = raw.decode(errors="replace")
                logfile.write(f"{wall:.3f} {line}")
                logfile.flush()
                n = parse_receiver_line(line, t, wall)
                with self._lock:
                    self.receiver_lines += 1
                    if n is not None:
                        self.notifications.append(n)
                if n is not None:
                    names = ", ".join(f"{a.alertname} {a.status}" for a in n.alerts)
                    self.log(f"receiver: /alerts/{n.receiver}: {names}")
        thread = threading.Thread(target=run, daemon=True, name="receiver-reader")
        thread.start()
        return thread

    # --- polling
    def _set(self, t: float, source: str, alertname: str, key: str, state: str) -> None:
        k = (source, alertname, key)
        if self._current.get(k) != state:
            self._current[k] = state
            self.changes.append(Change(t, source, alertname, key, state))

    def poll_once(self) -> None:
        t = time.monotonic()
        seen: set[tuple[str, str, str]] = set()
        for source, fetch in (("prometheus", self._prom_alerts), ("alertmanager", self._am_alerts)):
            try:
                alerts = fetch()
            except (OSError, RuntimeError, ValueError) as e:
                self.poll_errors[source] = self.poll_errors.get(source, 0) + 1
                if self.poll_errors[source] in (1, 10, 100):
                    self.log(f"watcher: {source} not answering ({e})")
                # Unreachable is not "no alerts": keep the states as they were.
                seen.update(k for k in self._current if k[0] == source)
                continue
            with self._lock:
                for alertname, key, state in alerts:
                    seen.add((source, alertname, key))
                    self._set(t, source, alertname, key, state)
        with self._lock:
            for k, state in list(self._current.items()):
                if k not in seen and state not in ("inactive", "gone"):
                    self._set(t, k[0], k[1], k[2], "inactive" if k[0] == "prometheus" else "gone")

    def _prom_alerts(self):
        data = get_json(f"{self.prom}/api/v1/alerts", timeout=3)
        return [(a["labels"].get("alertname", ""), label_key(a["labels"]), a["state"])
                for a in data["data"]["alerts"]]

    def _am_alerts(self):
        alerts = get_json(f"{self.am}/api/v2/alerts?active=true&silenced=true&inhibited=true", timeout=3)
        return [(a["labels"].get("alertname", ""), label_key(a["labels"]), a["status"]["state"])
                for a in alerts]

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll_once()
            self._stop_event.wait(POLL_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    # --- questions the scenarios ask
    def first_change(self, source: str, alertname: str, states: tuple[str, ...], after: float,
                     before: float | None = None) -> float | None:
        with self._lock:
            for c in self.changes:
                if (c.source == source and c.alertname == alertname and c.state in states
                        and c.t >= after and (before is None or c.t <= before)):
                    return c.t
        return None

    def active_now(self, source: str, states: tuple[str, ...]) -> set[str]:
        with self._lock:
            return {k[1] for k, s in self._current.items() if k[0] == source and s in states}

    def delivered(self, alertname: str | None = None, status: str | None = None, after: float = 0.0,
                  before: float | None = None) -> list[tuple[Notification, Delivered]]:
        with self._lock:
            out = []
            for n in self.notifications:
                if n.t < after or (before is not None and n.t > before):
                    continue
                for a in n.alerts:
                    if (alertname is None or a.alertname == alertname) and (status is None or a.status == status):
                        out.append((n, a))
            return out

    def first_delivered(self, alertname: str, status: str, after: float) -> tuple[float, str] | None:
        hits = self.delivered(alertname, status, after)
        return (hits[0][0].t, hits[0][0].receiver) if hits else None
