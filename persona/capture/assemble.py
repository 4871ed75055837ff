"""Pure assembly of a persona manifest from what the capture observed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from persona.capture import parse
from persona.model import (
    Component,
    ComponentKind,
    HostInfo,
    LoadProfile,
    PersonaManifest,
    ResourceProfile,
)

MODEL_ROLE = {"redis": "cache", "api": "app", "worker": "worker", "pause": "system",
              "load": "other", "db": "db", "proxy": "proxy", "queue": "queue"}


@dataclass(frozen=True)
class ContainerObs:
    name: str
    cid: str
    role: str  # the lab's role label
    image: str
    image_id: str
    command: tuple[str, ...]
    fs_added: int
    fs_changed: int
    fs_deleted: tuple[str, ...]
    fs_archive: str  # data path
    fs_bytes: int
    process: Mapping[str, Any] | None = None  # criu_image_summary + dump_ms; None: not dumped
    process_data: str | None = None
    process_bytes: int = 0
    usage: Mapping[str, float | int] | None = None  # parse.summarize_samples
    cpu_limit: float | None = None
    mem_limit: int | None = None
    config_files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path -> sha/size/data
    live_settings: Mapping[str, Any] | None = None
    app_version: str | None = None


@dataclass(frozen=True)
class HostObs:
    host: str
    captured_at: str
    kernel: str
    criu_version: str
    docker_version: str
    freeze_ms: float
    containers: tuple[ContainerObs, ...]
    network: Mapping[str, Any]  # addresses, routes, listening, established, joins
    network_data: str
    network_bytes: int
    modules: tuple[parse.KernelModule, ...]
    modules_note: str
    cpuinfo_data: str | None
    peak_requests_per_s: float | None
    window_s: float


def short(obs: ContainerObs, host: str) -> str:
    prefix = f"persona-{host}-"
    return obs.name[len(prefix):] if obs.name.startswith(prefix) else obs.name


def build_manifest(h: HostObs) -> PersonaManifest:
    comps: list[Component] = []
    names = {c.name: short(c, h.host) for c in h.containers}
    servers: dict[str, set[str]] = {}
    for j in h.network.get("joins", []):
        if j.get("client") and j.get("server") and j["client"] != j["server"]:
            servers.setdefault(j["client"], set()).add(j["server"])
    comps.append(Component(
        name="network", kind=ComponentKind.NETWORK, size_bytes=h.network_bytes, role="system",
        attributes={k: h.network[k] for k in ("addresses", "routes", "listening", "established",
                                              "joins") if k in h.network},
        data=(h.network_data,)))
    deps = parse.module_dependencies(list(h.modules))
    for m in h.modules:
        comps.append(Component(
            name=f"kmod.{m.name}", kind=ComponentKind.KERNEL_MODULE, size_bytes=m.size,
            depends_on=tuple(f"kmod.{d}" for d in deps[m.name]), role="system",
            attributes={"load_position": m.load_position, "parameters": dict(m.parameters),
                        "refcount": m.refcount, "state": m.state, "used_by": list(m.used_by)}))
    for c in h.containers:
        n = names[c.name]
        role = MODEL_ROLE.get(c.role, "other")
        comps.append(Component(
            name=f"{n}.filesystem", kind=ComponentKind.FILESYSTEM, size_bytes=c.fs_bytes, role=role,
            attributes={"container": c.name, "image": c.image, "image_id": c.image_id,
                        "added": c.fs_added, "changed": c.fs_changed,
                        "deleted": list(c.fs_deleted), "format": "tar of overlay upper dir "
                        "(whiteouts as 0/0 char devices)"},
            data=(c.fs_archive,)))
        if c.config_files or c.live_settings:
            comps.append(Component(
                name=f"{n}.config", kind=ComponentKind.CONFIG,
                size_bytes=sum(int(f["size"]) for f in c.config_files.values()), role=role,
                attributes={"files": {p: {k: f[k] for k in ("sha256", "size", "mtime_ns", "mode")
                                          if k in f}
                                      for p, f in c.config_files.items()},
                            "live": dict(c.live_settings or {})},
                data=tuple(str(f["data"]) for f in c.config_files.values())))
        if c.process is not None:
            d = [f"{n}.filesystem", "network"]
            if c.config_files or c.live_settings:
                d.append(f"{n}.config")
            d += sorted(f"{names[s]}.process" for s in servers.get(c.name, ())
                        if s in names and s != c.name)
            res = None
            if c.usage is not None:
                res = ResourceProfile(
                    cpu_usage_cores=float(c.usage["cpu_usage_cores"]),
                    cpu_peak_cores=float(c.usage["cpu_peak_cores"]),
                    memory_bytes=int(c.usage["memory_bytes"]),
                    memory_peak_bytes=int(c.usage["memory_peak_bytes"]),
                    io_read_bps=float(c.usage["io_read_bps"]),
                    io_write_bps=float(c.usage["io_write_bps"]),
                    cpu_limit_cores=c.cpu_limit, memory_limit_bytes=c.mem_limit,
                    window_s=float(c.usage["window_s"]), samples=int(c.usage["samples"]))
            comps.append(Component(
                name=f"{n}.process", kind=ComponentKind.PROCESS, size_bytes=c.process_bytes,
                depends_on=tuple(d), role=role, resources=res,
                attributes={"container": c.name, "container_id": c.cid, "image": c.image,
                            "command": list(c.command), **dict(c.process)},
                data=(c.process_data,) if c.process_data else ()))
    app_versions = {names[c.name]: c.app_version or c.image for c in h.containers}
    dependencies = {f"{names[c]}.process": ",".join(sorted(f"{names[s]}.process" for s in ss))
                    for c, ss in servers.items() if c in names}
    labels = {"docker_version": h.docker_version, "freeze_ms": f"{h.freeze_ms:.1f}",
              "kernel_modules": h.modules_note}
    if h.cpuinfo_data:
        labels["criu_cpuinfo"] = h.cpuinfo_data
    peak_cpu = sum(float(c.usage["cpu_peak_cores"]) for c in h.containers if c.usage)
    return PersonaManifest(
        host=HostInfo(name=h.host, captured_at=h.captured_at, kernel=h.kernel,
                      criu_version=h.criu_version, app_versions=app_versions,
                      dependencies=dependencies, labels=labels),
        components=tuple(comps),
        load=LoadProfile(peak_cpu_cores=peak_cpu, peak_requests_per_s=h.peak_requests_per_s,
                         window_s=h.window_s))


def summary_json(m: PersonaManifest, version: str, freeze_ms: float, store: str,
                 extra: Mapping[str, Any]) -> dict[str, Any]:
    """The `persona capture --json` contract."""
    return {
        "host": m.host.name,
        "version": version,
        "freeze_ms": round(freeze_ms, 1),
        "store": store,
        "components": [{"name": c.name, "kind": c.kind.value, "size_bytes": c.size_bytes,
                        "depends_on": list(c.depends_on), "role": c.role, "data": list(c.data)}
                       for c in m.components],
        "total_bytes": sum(c.size_bytes for c in m.components),
        **dict(extra),
    }
