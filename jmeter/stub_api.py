#!/usr/bin/env python3
"""A stand-in JSON API for scripts/test-loadtest.sh: it checks what the plan sends for routes the
real service does not have (path parameters, PUT/POST/PATCH/DELETE with a JSON body).

    python3 jmeter/stub_api.py PORT SUMMARY.json

Answers every request on 127.0.0.1:PORT with `{"method":"PUT","path":"/api/v1/notes/7"}`
(application/json), status 201 for POST and 200 otherwise. On SIGTERM it writes SUMMARY.json: how
many requests it saw of each method, path, request content type and request body, and exits 0.
"""
from __future__ import annotations

import collections
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN: collections.Counter = collections.Counter()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the plan's clients expect
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else None
        SEEN[(self.command, self.path, self.headers.get("Content-Type"), body)] += 1
        payload = json.dumps({"method": self.command, "path": self.path}, separators=(",", ":")).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, *args) -> None:  # quiet: thousands of requests
        pass


def main() -> int:
    port, summary = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        rows = [{"method": m, "path": p, "content_type": t, "body": b, "count": n}
                for (m, p, t, b), n in sorted(SEEN.items(), key=str)]
        with open(summary, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
