"""The compose stack's services as real processes on one private loopback, configured from
docker-compose.yml and the repository's files.

Each stack runs in its own network, mount and PID namespaces (stack.py enters them): its loopback
plays the compose network, every service gets its own 127.0.0.x address and the name compose
gives it, and Docker's embedded DNS is Debian's dnsmasq on 127.0.0.11:53 serving one hosts file
per running container from a directory it watches (a stopped container's record is deleted; no
replica at all is NXDOMAIN). /etc/resolv.conf says `nameserver 127.0.0.11`, as in a container.

Commands and configuration paths come from docker-compose.yml: a service's `command:` is run by
the Debian binary of its image, and every container path in it is mapped back to the host path
its `volumes:` entry mounts there (a named volume becomes a directory of the stack).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from observe import http

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "monitoring"))
from common import SERVICE  # noqa: E402

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "app" / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "compose" / "nginx.conf"

# --- the network: the same plan in every stack (each has its own loopback) ----------------------
DNS_IP = "127.0.0.11"              # Docker's embedded DNS; nginx.conf's `resolver` names it
REPLICA_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
IPS = {                            # compose service -> its container's address
    "lb": "127.0.0.5",
    "prometheus": "127.0.0.6",
    "alertmanager": "127.0.0.7",
    "alert-receiver": "127.0.0.8",
    "blackbox": "127.0.0.9",
}
API_PORT, METRICS_PORT = 4000, 9464
PORTS = {"prometheus": 9090, "alertmanager": 9093, "alert-receiver": 5001, "blackbox": 9115, "lb": 4000}
RECEIVER_SERVICE, BLACKBOX_SERVICE = "alert-receiver", "blackbox"
# The official images run these as nobody (their USER); compose sets no `user:` for them.
IMAGE_USERS = {"prometheus": (65534, 65534), "alertmanager": (65534, 65534), "blackbox": (65534, 65534)}
# The Debian binary that plays each image.
BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "blackbox": "prometheus-blackbox-exporter",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------- compose
def compose_services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with no .env and no variable set: what a plain `docker compose up`
    runs. `$$` is a literal `$`."""
    return _VAR.sub(lambda m: m.group(3) or "", value).replace("$$", "$")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    if isinstance(cmd, str):
        cmd = cmd.split()
    return [interpolate(str(c)) for c in cmd]


def compose_user(service: dict) -> tuple[int, int] | None:
    """`user: "uid:gid"` of a compose service."""
    user = str(service.get("user") or "")
    m = re.fullmatch(r"(\d+):(\d+)", user)
    return (int(m.group(1)), int(m.group(2))) if m else None


def image_user_and_env() -> tuple[tuple[int, int] | None, dict[str, str]]:
    """The service image's final USER and ENV (app/Dockerfile): who the replicas run as."""
    user, env = None, {}
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"^USER\s+(\d+):(\d+)\s*$", line):
            user = (int(m.group(1)), int(m.group(2)))
        elif m := re.match(r"^FROM\s", line):
            user, env = None, {}
        elif m := re.match(r"^ENV\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*$", line):
            env[m.group(1)] = m.group(2)
    return user, env


@dataclass
class Mount:
    container: str
    host: Path


def mounts(service: dict, stack_dir: Path, overrides: dict[str, Path],
           owner: tuple[int, int] | None = None) -> list[Mount]:
    """The service's volumes: bind mounts to repository paths (or their override), named volumes
    to directories of the stack (owned by OWNER, as Docker gives a new volume the image's)."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            src, dst = vol.get("source", ""), vol["target"]
        else:
            src, dst = vol.split(":")[:2]
        if src.startswith((".", "/")):
            rel = os.path.normpath(src)
            host = overrides.get(rel, (ROOT / src).resolve())
        else:
            host = stack_dir / "volumes" / src
            host.mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(host, *owner)
        out.append(Mount(dst.rstrip("/"), Path(host)))
    return sorted(out, key=lambda m: len(m.container), reverse=True)


def host_path(container_path: str, service_mounts: list[Mount]) -> str:
    for m in service_mounts:
        if container_path == m.container or container_path.startswith(m.container + "/"):
            return str(m.host) + container_path[len(m.container):]
    return container_path


def map_args(args: list[str], service_mounts: list[Mount]) -> list[str]:
    """Container paths in `--flag=/path` and `/path` arguments become host paths."""
    out = []
    for a in args:
        if a.startswith("--") and "=/" in a:
            flag, path = a.split("=", 1)
            out.append(f"{flag}={host_path(path, service_mounts)}")
        elif a.startswith("/"):
            out.append(host_path(a, service_mounts))
        else:
            out.append(a)
    return out


# ------------------------------------------------------------------------------- processes
class Processes:
    """What this stack started; each stopped by its PID, never by name."""

    def __init__(self, log_dir: Path, log):
        self.log_dir, self.log = log_dir, log
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict | None = None, stdout_pipe: bool = False,
              user: tuple[int, int] | None = None) -> subprocess.Popen:
        logf = open(self.log_dir / f"{name}.log", "ab")
        ids = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if stdout_pipe else logf,
                                stderr=logf, stdin=subprocess.DEVNULL, env=env, cwd="/", **ids)
        self.procs[name] = proc
        self.log(f"started {name} (pid {proc.pid}): {' '.join(argv)[:160]}")
        return proc

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                os.kill(p.pid, sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except ProcessLookupError:
                pass
        return p.returncode

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM to every process at once, SIGKILL to those still there after TIMEOUT."""
        procs = [self.procs.pop(name) for name in reversed(list(self.procs))]
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, seconds: float, ok=(200,)) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if http("GET", url, timeout=1)[0] in ok:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------------------- DNS
class Dns:
    """dnsmasq on 127.0.0.11:53, answering like Docker's embedded DNS from a watched directory of
    hosts files (one per container). No upstream, and every name is local (`--local=/#/`): an
    unknown name is NXDOMAIN, never REFUSED and never forwarded."""

    def __init__(self, stack_dir: Path, procs: Processes):
        self.dir = stack_dir / "dns-hosts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.procs = procs

    def start(self, as_root: bool = False) -> None:
        """`as_root`: the services run as root because the run's files are not reachable by
        other users (a clone under /root or in a 0700 directory); dnsmasq then must not drop
        to `nobody` either, or it cannot read its hosts directory and answers NXDOMAIN."""
        user = ["--user=root", "--group=root"] if as_root else ["--user=nobody", "--group=nogroup"]
        self.procs.start("dnsmasq", [
            "dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
            "--no-poll", f"--hostsdir={self.dir}", f"--listen-address={DNS_IP}", "--bind-interfaces",
            "--port=53", "--local=/#/", *user, "--pid-file=",
            "--log-facility=-", "--log-queries", "--local-ttl=0",
        ])

    def add(self, key: str, name: str, ip: str) -> None:
        tmp = self.dir / f".{key}.tmp"
        tmp.write_text(f"{ip} {name}\n")
        tmp.chmod(0o644)
        tmp.rename(self.dir / key)  # one inotify event for a complete file

    def remove(self, key: str) -> None:
        (self.dir / key).unlink(missing_ok=True)


def dig(name: str, qtype: str = "A") -> tuple[str, list[str]]:
    """(status, answers) from 127.0.0.11, as a client in the stack sees them."""
    out = subprocess.run(["dig", f"@{DNS_IP}", "+tries=1", "+time=2", qtype, name],
                         capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"status: (\w+)", out)
    answers = re.findall(rf"^{re.escape(name)}\.\s+\d+\s+IN\s+{qtype}\s+(\S+)$", out, re.M)
    return (m.group(1) if m else "NO ANSWER"), sorted(answers)


# ------------------------------------------------------------------------------- nginx
def derive_nginx_conf(lb_ip: str) -> tuple[str, str]:
    """deploy/compose/nginx.conf with the one change a shared loopback needs, and that change.

    `listen 4000;` binds every address, which the replicas' own 127.0.0.x:4000 sockets already
    hold (in compose each container has its own network namespace). The lb listens on its own
    address instead; every other line is the file's. (`resolver 127.0.0.11`, `listen 8080` and
    `pid /tmp/nginx.pid` stay: the stack has its own loopback and its own /tmp.)"""
    text = NGINX_CONF.read_text()
    new, n = re.subn(rf"(?m)^(\s*)listen {API_PORT};", rf"\1listen {lb_ip}:{API_PORT};", text)
    if n != 1:
        raise RuntimeError(f"expected one `listen {API_PORT};` in {NGINX_CONF}, found {n}")
    header = (f"# DERIVED by monitoring/gameday from deploy/compose/nginx.conf (sha256 {sha256(NGINX_CONF)}):\n"
              f"# only `listen {API_PORT};` -> `listen {lb_ip}:{API_PORT};` (see components.py).\n")
    return header + new, f"listen {API_PORT}; -> listen {lb_ip}:{API_PORT};"


def copy_prometheus_dir(dest: Path) -> Path:
    """A copy of monitoring/prometheus (prometheus.yml and rules/), byte for byte, for a stack
    that adds rule files: it plays the host folder compose mounts at /etc/prometheus."""
    src = ROOT / "monitoring" / "prometheus"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(src / "prometheus.yml", dest / "prometheus.yml")
    shutil.copytree(src / "rules", dest / "rules")
    if sha256(dest / "prometheus.yml") != sha256(src / "prometheus.yml"):
        raise RuntimeError("the copy of prometheus.yml differs from the repository's")
    return dest
