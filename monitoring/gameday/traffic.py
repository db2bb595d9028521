"""Users: a steady, modest request rate through the load balancer, bounded in count and time.

A scheduler thread releases one request every 1/rps seconds to a fixed pool of workers; a request
whose slot is more than a second old when a worker is free is dropped and counted (a hung replica
holds a worker for nginx's 15 s read timeout). Every answer's status (0: no answer) and latency is
kept, so each scenario can say what users saw.
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request

# (method, path): the routes users call. /api/v1/info and unknown paths count in the SLIs; the
# health probe does not (it is there because the orchestrator's probes are there too).
MIX = [
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/info"),
    ("GET", "/no/such/route"),
    ("GET", "/api/v1/health"),
]
WORKERS = 24
REQUEST_TIMEOUT = 20.0  # above nginx's proxy_read_timeout (15 s): users see nginx's answer


class Traffic:
    def __init__(self, base: str, rps: float, max_seconds: float, slow_seconds: float):
        self.base, self.rps, self.max_seconds = base, rps, max_seconds
        self.slow_seconds = slow_seconds  # the latency SLO's threshold
        self.max_requests = int(rps * max_seconds) + 1
        self.records: list[tuple[float, int, float]] = []  # (sent at, status, seconds)
        self.dropped = 0
        self._queue: queue.Queue[tuple[float, str, str] | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._schedule, daemon=True, name="traffic-scheduler")]
        self._threads += [threading.Thread(target=self._work, daemon=True, name=f"traffic-{i}") for i in range(WORKERS)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for _ in range(WORKERS):
            self._queue.put(None)
        for t in self._threads:
            t.join(REQUEST_TIMEOUT + 2)

    def _schedule(self) -> None:
        start = time.monotonic()
        for i in range(self.max_requests):
            due = start + i / self.rps
            if self._stop.wait(max(0.0, due - time.monotonic())) or time.monotonic() - start > self.max_seconds:
                return
            method, path = MIX[i % len(MIX)]
            self._queue.put((due, method, path))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            due, method, path = item
            if time.monotonic() - due > 1.0:
                with self._lock:
                    self.dropped += 1
                continue
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(urllib.request.Request(self.base + path, method=method),
                                            timeout=REQUEST_TIMEOUT) as resp:
                    resp.read()
                    status = resp.status
            except urllib.error.HTTPError as e:
                status = e.code
            except (urllib.error.URLError, OSError):
                status = 0
            with self._lock:
                self.records.append((t0, status, time.monotonic() - t0))

    def window(self, t0: float, t1: float) -> dict:
        """What users saw between t0 and t1: requests, statuses, slow share, p99."""
        with self._lock:
            rec = [r for r in self.records if t0 <= r[0] < t1]
        statuses: dict[str, int] = {}
        for _, status, _ in rec:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        latencies = sorted(r[2] for r in rec)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
        return {
            "requests": len(rec),
            "statuses": dict(sorted(statuses.items())),
            "p99_seconds": round(p99, 3) if p99 is not None else None,
            f"slower_than_{self.slow_seconds}s": sum(1 for x in latencies if x > self.slow_seconds),
        }
