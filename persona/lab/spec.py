"""Pure description of the lab: names, addresses, images and the demo host's containers.

Nothing here talks to Docker; ``persona.lab.demo`` turns these specs into Engine API calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

LAB_LABEL = "persona.lab"
HOST_LABEL = "persona.host"
ROLE_LABEL = "persona.role"
CONFIG_LABEL = "persona.config-files"
INTROSPECT_LABEL = "persona.introspect"
READY_LABEL = "persona.ready-file"  # a heartbeat file: the restorer waits for it after a restore

NETWORK = "persona-lab"
SUBNET = "10.77.0.0/24"
DEMO_HOST = "demo"
DEMO_IP = "10.77.0.10"
LOAD_IP = "10.77.0.20"
CHECK_HOST = "demo-check"
READY_FILE = "/tmp/persona-ready"


@dataclass(frozen=True)
class LabHost:
    """A named lab host: its address, its load client's address, and how its api behaves.

    ``resume_check_items`` > 0: the api re-verifies that many index entries after a pause
    (CPU-bound, so a restore's duration follows the CPU allocation it was given) and the
    restorer waits for its ready-file heartbeat after restoring it (``persona.ready-file``)."""

    ip: str
    load_ip: str
    resume_check_items: int = 0


LAB_HOSTS: dict[str, LabHost] = {
    DEMO_HOST: LabHost(DEMO_IP, LOAD_IP),
    CHECK_HOST: LabHost("10.77.0.11", "10.77.0.21", resume_check_items=3000),
}


def lab_host(host: str) -> LabHost:
    """The named lab host. ``<name>-<suffix>`` (e.g. a test's ``demo-check-1a2b3c``) behaves
    like ``<name>`` at an address of its own; any other name behaves like ``demo``."""
    if host in LAB_HOSTS:
        return LAB_HOSTS[host]
    family = max((n for n in LAB_HOSTS if host.startswith(n + "-")), key=len, default=DEMO_HOST)
    return LAB_HOSTS[family]

APP_DIR = Path(__file__).parent / "demo_app"
CACHE_DIR = Path("/var/cache/persona/lab")
DEBIAN_INCLUDE = ("python3-minimal", "libpython3.11-stdlib", "redis-server")
DEBIAN_SUITE = "bookworm"


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def base_tag() -> str:
    """Tag of the debootstrap base image: changes whenever its recipe changes."""
    return "persona-lab/base:" + _short(f"{DEBIAN_SUITE}|{','.join(DEBIAN_INCLUDE)}".encode())


PAUSE_IMAGE = "persona-lab/pause:1"


def demo_tag(app_dir: Path = APP_DIR) -> str:
    """Tag of the demo app image: a hash of the base tag and every file of the app."""
    h = hashlib.sha256(base_tag().encode())
    for p in sorted(app_dir.iterdir()):
        if p.is_file() and p.suffix in {".py", ".json", ".conf", ""}:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return "persona-lab/demo:" + h.hexdigest()[:12]


@dataclass(frozen=True)
class ContainerSpec:
    """One container of the lab, as plain data."""

    name: str
    image: str
    command: tuple[str, ...]
    role: str
    host: str
    ip: str | None = None  # only for the container that owns the namespace
    netns_of: str | None = None  # name of the container whose namespace is joined
    environment: tuple[tuple[str, str], ...] = ()
    cpus: float | None = None
    mem_bytes: int | None = None
    config_files: tuple[str, ...] = ()
    introspect: str | None = None
    extra_labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def labels(self) -> dict[str, str]:
        out = {LAB_LABEL: "1", HOST_LABEL: self.host, ROLE_LABEL: self.role}
        if self.config_files:
            out[CONFIG_LABEL] = ",".join(self.config_files)
        if self.introspect:
            out[INTROSPECT_LABEL] = self.introspect
        out.update(dict(self.extra_labels))
        return out


def demo_specs(host: str = DEMO_HOST, ip: str | None = None, image: str | None = None,
               with_load: bool = True) -> list[ContainerSpec]:
    """The demo host: pause (owns the IP), redis, api, worker; plus a load client elsewhere.

    Order is start order: the namespace owner first, redis before its clients. ``ip``
    defaults to the named lab host's (:data:`LAB_HOSTS`).
    """
    img = image or demo_tag()
    lh = lab_host(host)
    ip = ip or lh.ip
    api_env: tuple[tuple[str, str], ...] = ()
    api_labels: tuple[tuple[str, str], ...] = ()
    if lh.resume_check_items:
        api_env = (("DEMO_RESUME_CHECK_ITEMS", str(lh.resume_check_items)),
                   ("DEMO_READY_FILE", READY_FILE))
        api_labels = ((READY_LABEL, READY_FILE),)
    pause = f"persona-{host}-pause"
    specs = [
        ContainerSpec(pause, PAUSE_IMAGE, ("/bin/sleep", "2147483647"), "pause", host, ip=ip),
        ContainerSpec(f"persona-{host}-redis", img, ("redis-server", "/etc/demo/redis.conf"),
                      "redis", host, netns_of=pause, mem_bytes=128 << 20,
                      config_files=("/etc/demo/redis.conf",)),
        ContainerSpec(f"persona-{host}-api", img, ("python3", "/app/api.py"), "api", host,
                      netns_of=pause, cpus=0.5, mem_bytes=128 << 20,
                      config_files=("/etc/demo/api.json",),
                      introspect="http://127.0.0.1:8080/introspect",
                      environment=api_env, extra_labels=api_labels),
        ContainerSpec(f"persona-{host}-worker", img, ("python3", "/app/worker.py"), "worker",
                      host, netns_of=pause, cpus=0.25, mem_bytes=64 << 20),
    ]
    if with_load:
        specs.append(ContainerSpec(f"persona-{host}-load", img, ("python3", "/app/loadgen.py"),
                                   "load", f"{host}-client", ip=lh.load_ip,
                                   environment=(("DEMO_TARGET", ip),)))
    return specs


def create_args(spec: ContainerSpec, netns_id: str | None = None,
                network: str = NETWORK) -> dict[str, object]:
    """Arguments for APIClient.create_container/create_host_config/networking (pure)."""
    host_config: dict[str, object] = {"auto_remove": False}
    if spec.netns_of is not None:
        if netns_id is None:
            raise ValueError(f"{spec.name} joins {spec.netns_of}'s namespace: pass its id")
        host_config["network_mode"] = f"container:{netns_id}"
    else:
        host_config["network_mode"] = network
    if spec.cpus is not None:
        host_config["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.mem_bytes is not None:
        host_config["mem_limit"] = spec.mem_bytes
    args: dict[str, object] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "labels": spec.labels(),
        "environment": dict(spec.environment),
        "host_config": host_config,
        "hostname": spec.host if spec.netns_of is None else None,
    }
    if spec.ip is not None:
        args["networking_config"] = {network: {"ipv4_address": spec.ip}}
    return args
