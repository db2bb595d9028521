#!/usr/bin/env python3
"""A webhook receiver for Alertmanager that prints every notification, one line per alert.

    receiver.py [--listen HOST:PORT]     serve (default 0.0.0.0:5001): POST /alerts/<receiver>
    receiver.py --check URL              exit 0 if URL answers 200 (the container's healthcheck)

Alertmanager posts to /alerts/<receiver> (monitoring/alertmanager/alertmanager.yml); every alert
of the notification becomes one line on stdout, flushed at once, so `docker compose logs -f
alert-receiver` shows the pages and tickets as they arrive:

    2025-06-01T12:00:00Z /alerts/page firing BackendDown severity=page instance=10.0.0.2:9464 summary="..."

Fields: time received (UTC), the path (which receiver), the alert's status (firing or resolved),
alertname, severity, instance ("-" when the alert has none) and the summary annotation. GET
/-/healthy answers 200. Python 3 standard library only: the compose service runs it in the
official python:*-alpine image, mounted read-only; it runs the same on a host
(`python3 monitoring/alert-receiver/receiver.py --listen 127.0.0.1:5001`).

It is the out-of-the-box end of the notification path, not a pager: a fork points Alertmanager's
receivers at its own channels instead (docs/observability.md, "Alertmanager").
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1 << 20  # Alertmanager's notifications are a few KiB; refuse anything huge
PATH_PREFIX = "/alerts/"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_EMIT = threading.Lock()


def emit(line: str) -> None:
    """One whole line to stdout. Notifications arrive on several threads at once, and print()
    writes the text and its newline separately, so two lines could run into one."""
    with _EMIT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def quote(text: str) -> str:
    """A value as one token: in double quotes, on one line."""
    return json.dumps(" ".join(str(text).split()), ensure_ascii=False)


def alert_lines(path: str, payload: dict) -> list[str]:
    """One line per alert of an Alertmanager webhook payload (version 4)."""
    lines = []
    for alert in payload.get("alerts") or []:
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        lines.append(
            f"{now()} {path} {alert.get('status') or payload.get('status') or '-'} "
            f"{labels.get('alertname', '-')} severity={labels.get('severity', '-')} "
            f"instance={labels.get('instance', '-')} summary={quote(annotations.get('summary', ''))}"
        )
    return lines


class Handler(BaseHTTPRequestHandler):
    server_version = "alert-receiver"

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        if not self.path.startswith(PATH_PREFIX) or self.path == PATH_PREFIX:
            return self.answer(404, "POST to /alerts/<receiver>\n")
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            return self.answer(413 if length > MAX_BODY_BYTES else 400, "a JSON body of at most 1 MiB\n")
        try:
            payload = json.loads(self.rfile.read(length))
            lines = alert_lines(self.path, payload)
        except (ValueError, AttributeError, TypeError) as e:
            emit(f"{now()} {self.path} unreadable notification: {e}")
            return self.answer(400, "not an Alertmanager webhook payload\n")
        for line in lines:
            emit(line)
        self.answer(200, "ok\n")

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/-/healthy":
            return self.answer(200, "ok\n")
        self.answer(404, "not found\n")

    def answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the http.server API)
        pass  # the alert lines are the log; no access log around them


def serve(listen: str) -> int:
    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):  # as PID 1 in a container, SIGTERM needs a handler to stop us
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    emit(f"{now()} alert-receiver listening on {listen}, POST {PATH_PREFIX}<receiver>")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def check(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as e:
        print(f"{url}: {e}", file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="0.0.0.0:5001", help="HOST:PORT to listen on (default %(default)s)")
    parser.add_argument("--check", metavar="URL", help="exit 0 if URL answers 200, else 1 (healthcheck)")
    args = parser.parse_args()
    if args.check:
        return check(args.check)
    return serve(args.listen)


if __name__ == "__main__":
    sys.exit(main())
