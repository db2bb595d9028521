#!/usr/bin/env python3
"""Turns the service's fault injection on or off on every replica: GET/PUT/DELETE /faults on
each replica's metrics (admin) port, found through DNS like Prometheus finds them.

    faults.py [--name NAME] [--port 9464] show
    faults.py [--name NAME] [--port 9464] set '{"error_ratio":0.05,"error_statuses":[500]}'
    faults.py [--name NAME] [--port 9464] off

In the compose stack the metrics port is not published: run it from a container on the compose
network that has Python, the webhook receiver's, reading this file from stdin:

    docker compose exec -T alert-receiver python3 - --name NAME set '{"error_ratio":0.05}' \
        < monitoring/gameday/faults.py

NAME is the service's compose name (default: the one in app/Cargo.toml, when this file is run
from the repository). `set` replaces every fault: a field left out is off (docs/contract.md, "Faults").
Python standard library only. The game day sets its faults with these same functions.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

METRICS_PORT = 9464


def replicas(name: str) -> list[str]:
    """Every A record of NAME (one per running replica in Docker's DNS), sorted."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos}, key=lambda ip: tuple(int(x) for x in ip.split(".")))


def call(address: str, method: str, faults: dict | None = None, port: int = METRICS_PORT,
         timeout: float = 5.0) -> tuple[int, str]:
    """One request to http://ADDRESS:PORT/faults: (status, body); status 0 when nothing answered."""
    body = json.dumps(faults).encode() if faults is not None else None
    req = urllib.request.Request(f"http://{address}:{port}/faults", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def default_name() -> str | None:
    """The service's name from app/Cargo.toml, when this file is read from the repository."""
    try:
        cargo = Path(__file__).resolve().parents[2] / "app" / "Cargo.toml"
    except (NameError, IndexError):  # read from stdin
        return None
    if not cargo.is_file():
        return None
    m = re.search(r'(?m)^name = "([^"]+)"$', cargo.read_text())
    return m.group(1) if m else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=default_name(), help="the compose service (DNS name) of the replicas")
    parser.add_argument("--port", type=int, default=METRICS_PORT, help="the metrics (admin) port")
    parser.add_argument("action", choices=["show", "set", "off"])
    parser.add_argument("faults", nargs="?", help="for set: the faults as JSON")
    args = parser.parse_args()
    if not args.name:
        parser.error("--name is required (the service's compose name)")
    faults = None
    if args.action == "set":
        if not args.faults:
            parser.error('set needs the faults as JSON, e.g. \'{"error_ratio":0.05}\'')
        faults = json.loads(args.faults)
    addresses = replicas(args.name)
    if not addresses:
        print(f"no replica: {args.name} does not resolve", file=sys.stderr)
        return 1
    method = {"show": "GET", "set": "PUT", "off": "DELETE"}[args.action]
    failed = 0
    for address in addresses:
        status, body = call(address, method, faults, args.port)
        print(f"{address}:{args.port} {status} {body.strip()}")
        failed += status != 200
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
