"""The persona model: what a captured host is, as pure, typed, validated data.

A :class:`PersonaManifest` describes one capture of one host: identity and metadata
(:class:`HostInfo`), the observed aggregate load (:class:`LoadProfile`) and a set of
:class:`Component` objects of five kinds (:class:`ComponentKind`) joined by *hard*
dependencies that form a DAG ("restore X only after Y is up").

Resource *allocation* is not a component: it is a per-process decision taken when the
persona is applied. A process component carries what was *captured* about its resources
(:class:`ResourceProfile`: observed usage over a window, and the limits it ran under).

The JSON form carries ``schema_version``; :func:`manifest_from_dict` rejects malformed
input (unknown or missing fields, unknown kinds, negative sizes, dangling dependencies,
cycles, duplicate names, wrong schema version) with a :class:`~persona.errors.ManifestError`
whose ``field`` is a JSON path such as ``components[3].depends_on[0]``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from persona.errors import ManifestError

SCHEMA_VERSION = 1


class ComponentKind(StrEnum):
    """What part of a host's persona a component is."""

    FILESYSTEM = "filesystem"  # a container's / host's filesystem changes against its image
    KERNEL_MODULE = "kernel_module"  # one kernel module, with parameters, at a load position
    CONFIG = "config"  # an application's configuration (files + live settings)
    PROCESS = "process"  # a process tree with its memory image (CRIU)
    NETWORK = "network"  # connection tables, addresses and routes


KINDS: tuple[ComponentKind, ...] = tuple(ComponentKind)

# Roles say what a component does for the host. Policies may use them as features; the
# simulator's hidden structure (soft dependencies, demand bursts) is keyed on them.
ROLES: tuple[str, ...] = (
    "proxy",
    "app",
    "cache",
    "db",
    "queue",
    "worker",
    "sidecar",
    "storage",
    "system",
    "other",
)


@dataclass(frozen=True)
class ResourceProfile:
    """Captured resources of a process: usage observed over a window, and its limits.

    ``cpu_usage_cores`` is the mean over the window; ``cpu_peak_cores`` the highest sample.
    Limits are ``None`` when the process ran unconstrained.
    """

    cpu_usage_cores: float
    cpu_peak_cores: float
    memory_bytes: int
    memory_peak_bytes: int
    io_read_bps: float = 0.0
    io_write_bps: float = 0.0
    cpu_limit_cores: float | None = None
    memory_limit_bytes: int | None = None
    window_s: float = 0.0
    samples: int = 0


@dataclass(frozen=True)
class Component:
    """One restorable part of a persona.

    ``size_bytes`` is the size of the data that restoring it moves (memory image pages,
    filesystem diff, config files...). ``depends_on`` names components that must be fully
    restored first (hard dependencies). ``attributes`` holds kind-specific details captured
    from the real host (container id, image, pid, module parameters, file paths, ...), and
    ``data`` the relative paths of this component's data files inside the persona folder.
    """

    name: str
    kind: ComponentKind
    size_bytes: int
    depends_on: tuple[str, ...] = ()
    role: str = "other"
    resources: ResourceProfile | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    data: tuple[str, ...] = ()

    @property
    def is_process(self) -> bool:
        return self.kind is ComponentKind.PROCESS


@dataclass(frozen=True)
class LoadProfile:
    """The host's captured aggregate load: what the replacement must sustain."""

    peak_cpu_cores: float
    peak_requests_per_s: float | None = None
    window_s: float = 0.0


@dataclass(frozen=True)
class HostInfo:
    """Identity and metadata of the captured host."""

    name: str
    captured_at: str  # ISO 8601, UTC
    kernel: str = ""
    criu_version: str | None = None
    app_versions: Mapping[str, str] = field(default_factory=dict)
    dependencies: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PersonaManifest:
    """One capture of one host. Components are kept in captured order."""

    host: HostInfo
    components: tuple[Component, ...]
    load: LoadProfile
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # validation computes a topological order; keep it (not a field: no effect on ==)
        object.__setattr__(self, "_topo", validate_components(self.components))

    # ---- queries -------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def index(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.components)}

    def topological_order(self) -> tuple[str, ...]:
        """A dependency-respecting order; ties keep captured order (deterministic)."""
        return tuple(self.components[i].name for i in self.topological_indices())

    def topological_indices(self) -> tuple[int, ...]:
        """:meth:`topological_order` as indices into ``components``."""
        topo: tuple[int, ...] = self.__dict__["_topo"]
        return topo

    def with_components(self, components: Iterable[Component]) -> PersonaManifest:
        return replace(self, components=tuple(components))

    # ---- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return manifest_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + fsync + rename): a crash never leaves half a file."""
        atomic_write_text(Path(path), self.to_json() + "\n")


# ---------------------------------------------------------------------------------------
# validation


def _toposort(components: Sequence[Component]) -> list[int]:
    """Kahn's algorithm, smallest captured index first. Raises on cycles."""
    index = {c.name: i for i, c in enumerate(components)}
    indegree = [0] * len(components)
    children: list[list[int]] = [[] for _ in components]
    for i, c in enumerate(components):
        for d in c.depends_on:
            j = index[d]
            indegree[i] += 1
            children[j].append(i)
    import heapq

    ready = [i for i, n in enumerate(indegree) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        j = heapq.heappop(ready)
        order.append(j)
        for i in children[j]:
            indegree[i] -= 1
            if indegree[i] == 0:
                heapq.heappush(ready, i)
    if len(order) != len(components):
        cycle = _find_cycle(components)
        raise ManifestError(
            "hard dependencies form a cycle: "
            + " -> ".join(cycle)
            + "; remove one of these depends_on entries",
            field=f"components[{index[cycle[0]]}].depends_on",
        )
    return order


def _find_cycle(components: Sequence[Component]) -> list[str]:
    deps = {c.name: c.depends_on for c in components}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in deps[n]:
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for c in components:
        if c.name not in state:
            found = visit(c.name)
            if found:
                return found
    return []  # pragma: no cover - only called when a cycle exists


def validate_components(components: Sequence[Component]) -> tuple[int, ...]:
    """Check names, kinds, sizes, roles, dependencies and acyclicity of a component list.

    Returns a topological order (indices; ties keep captured order)."""
    seen: dict[str, int] = {}
    for i, c in enumerate(components):
        where = f"components[{i}]"
        if not isinstance(c.name, str) or not c.name:
            raise ManifestError("must be a non-empty string", field=f"{where}.name")
        if c.name in seen:
            raise ManifestError(
                f"duplicate component name {c.name!r} (also components[{seen[c.name]}])",
                field=f"{where}.name",
            )
        seen[c.name] = i
        if not isinstance(c.kind, ComponentKind):
            raise ManifestError(
                f"unknown kind {c.kind!r}; use one of {', '.join(KINDS)}", field=f"{where}.kind"
            )
        if not isinstance(c.size_bytes, int) or isinstance(c.size_bytes, bool) or c.size_bytes < 0:
            raise ManifestError(
                f"must be a non-negative integer, got {c.size_bytes!r}", field=f"{where}.size_bytes"
            )
        if c.role not in ROLES:
            raise ManifestError(
                f"unknown role {c.role!r}; use one of {', '.join(ROLES)}", field=f"{where}.role"
            )
        if c.resources is not None:
            _check_resources(c.resources, f"{where}.resources")
    for i, c in enumerate(components):
        for k, d in enumerate(c.depends_on):
            if d not in seen:
                raise ManifestError(
                    f"depends on {d!r}, which is not a component of this manifest",
                    field=f"components[{i}].depends_on[{k}]",
                )
            if d == c.name:
                raise ManifestError(
                    "a component cannot depend on itself", field=f"components[{i}].depends_on[{k}]"
                )
    return tuple(_toposort(components))


def _check_resources(r: ResourceProfile, where: str) -> None:
    for name in ("cpu_usage_cores", "cpu_peak_cores", "io_read_bps", "io_write_bps", "window_s"):
        v = getattr(r, name)
        if not _finite_nonneg(v):
            raise ManifestError(f"must be a finite number >= 0, got {v!r}", field=f"{where}.{name}")
    for name in ("memory_bytes", "memory_peak_bytes", "samples"):
        v = getattr(r, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ManifestError(f"must be an integer >= 0, got {v!r}", field=f"{where}.{name}")
    if r.cpu_limit_cores is not None and not (
        _finite_nonneg(r.cpu_limit_cores) and r.cpu_limit_cores > 0
    ):
        raise ManifestError("must be > 0 or null", field=f"{where}.cpu_limit_cores")
    if r.memory_limit_bytes is not None and (
        not isinstance(r.memory_limit_bytes, int) or r.memory_limit_bytes <= 0
    ):
        raise ManifestError(
            "must be a positive integer or null", field=f"{where}.memory_limit_bytes"
        )


def _finite_nonneg(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# ---------------------------------------------------------------------------------------
# (de)serialisation


def manifest_to_dict(m: PersonaManifest) -> dict[str, Any]:
    def res(r: ResourceProfile | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {k: getattr(r, k) for k in ResourceProfile.__dataclass_fields__}

    return {
        "schema_version": m.schema_version,
        "host": {
            "name": m.host.name,
            "captured_at": m.host.captured_at,
            "kernel": m.host.kernel,
            "criu_version": m.host.criu_version,
            "app_versions": dict(m.host.app_versions),
            "dependencies": dict(m.host.dependencies),
            "labels": dict(m.host.labels),
        },
        "load": {
            "peak_cpu_cores": m.load.peak_cpu_cores,
            "peak_requests_per_s": m.load.peak_requests_per_s,
            "window_s": m.load.window_s,
        },
        "components": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "size_bytes": c.size_bytes,
                "depends_on": list(c.depends_on),
                "role": c.role,
                "resources": res(c.resources),
                "attributes": dict(c.attributes),
                "data": list(c.data),
            }
            for c in m.components
        ],
    }


class _Reader:
    """Reads one JSON object, tracking the path for error messages."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            raise ManifestError(f"must be an object, got {type(obj).__name__}", field=path or None)
        self.obj: dict[str, Any] = obj
        self.path = path
        self.used: set[str] = set()

    def _f(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self, key: str, types: type | tuple[type, ...], default: Any = ..., nullable: bool = False
    ) -> Any:
        self.used.add(key)
        if key not in self.obj:
            if default is ...:
                raise ManifestError("is required", field=self._f(key))
            return default
        v = self.obj[key]
        if v is None and nullable:
            return None
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise ManifestError("has the wrong type (bool)", field=self._f(key))
        if not isinstance(v, types):
            names = (
                types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            )
            raise ManifestError(f"must be {names}, got {type(v).__name__}", field=self._f(key))
        return v

    def str_map(self, key: str) -> dict[str, str]:
        m = self.get(key, dict, default={})
        for k, v in m.items():
            if not isinstance(v, str):
                raise ManifestError("values must be strings", field=f"{self._f(key)}.{k}")
        return dict(m)

    def done(self) -> None:
        extra = sorted(set(self.obj) - self.used)
        if extra:
            raise ManifestError(
                f"unknown field {extra[0]!r}; put free-form data under 'attributes'",
                field=self._f(extra[0]),
            )


def _num(r: _Reader, key: str, default: Any = ...) -> float:
    v = r.get(key, (int, float), default=default)
    if v is not default and not _finite_nonneg(v):
        raise ManifestError(f"must be a finite number >= 0, got {v!r}", field=r._f(key))
    return float(v)


def manifest_from_dict(obj: object) -> PersonaManifest:
    """Build and validate a manifest from its JSON form."""
    top = _Reader(obj, "")
    version = top.get("schema_version", int)
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"unsupported schema version {version}; this persona reads version {SCHEMA_VERSION}",
            field="schema_version",
        )
    h = _Reader(top.get("host", dict), "host")
    host = HostInfo(
        name=h.get("name", str),
        captured_at=h.get("captured_at", str),
        kernel=h.get("kernel", str, default=""),
        criu_version=h.get("criu_version", str, default=None, nullable=True),
        app_versions=h.str_map("app_versions"),
        dependencies=h.str_map("dependencies"),
        labels=h.str_map("labels"),
    )
    h.done()
    if not host.name:
        raise ManifestError("must be a non-empty string", field="host.name")
    ld = _Reader(top.get("load", dict), "load")
    prps = ld.get("peak_requests_per_s", (int, float), default=None, nullable=True)
    load = LoadProfile(
        peak_cpu_cores=_num(ld, "peak_cpu_cores"),
        peak_requests_per_s=None if prps is None else float(prps),
        window_s=_num(ld, "window_s", default=0.0),
    )
    ld.done()
    raw = top.get("components", list)
    top.done()
    components = []
    for i, item in enumerate(raw):
        components.append(_component_from_dict(item, f"components[{i}]"))
    return PersonaManifest(
        host=host, components=tuple(components), load=load, schema_version=version
    )


def _component_from_dict(obj: object, where: str) -> Component:
    r = _Reader(obj, where)
    kind_s = r.get("kind", str)
    try:
        kind = ComponentKind(kind_s)
    except ValueError:
        raise ManifestError(
            f"unknown kind {kind_s!r}; use one of {', '.join(KINDS)}", field=f"{where}.kind"
        ) from None
    deps = r.get("depends_on", list, default=[])
    for k, d in enumerate(deps):
        if not isinstance(d, str):
            raise ManifestError(
                "must be a component name (string)", field=f"{where}.depends_on[{k}]"
            )
    data = r.get("data", list, default=[])
    for k, d in enumerate(data):
        if not isinstance(d, str) or d.startswith("/") or ".." in Path(d).parts:
            raise ManifestError(
                "must be a relative path inside the persona folder", field=f"{where}.data[{k}]"
            )
    res_obj = r.get("resources", dict, default=None, nullable=True)
    resources = None
    if res_obj is not None:
        rr = _Reader(res_obj, f"{where}.resources")
        lim = rr.get("cpu_limit_cores", (int, float), default=None, nullable=True)
        resources = ResourceProfile(
            cpu_usage_cores=_num(rr, "cpu_usage_cores"),
            cpu_peak_cores=_num(rr, "cpu_peak_cores"),
            memory_bytes=rr.get("memory_bytes", int),
            memory_peak_bytes=rr.get("memory_peak_bytes", int),
            io_read_bps=_num(rr, "io_read_bps", default=0.0),
            io_write_bps=_num(rr, "io_write_bps", default=0.0),
            cpu_limit_cores=None if lim is None else float(lim),
            memory_limit_bytes=rr.get("memory_limit_bytes", int, default=None, nullable=True),
            window_s=_num(rr, "window_s", default=0.0),
            samples=rr.get("samples", int, default=0),
        )
        rr.done()
    c = Component(
        name=r.get("name", str),
        kind=kind,
        size_bytes=r.get("size_bytes", int),
        depends_on=tuple(deps),
        role=r.get("role", str, default="other"),
        resources=resources,
        attributes=r.get("attributes", dict, default={}),
        data=tuple(data),
    )
    r.done()
    return c


def manifest_from_json(text: str) -> PersonaManifest:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    return manifest_from_dict(obj)


def load_manifest(path: str | os.PathLike[str]) -> PersonaManifest:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ManifestError(f"cannot read manifest {p}: {e.strerror}") from e
    try:
        return manifest_from_json(text)
    except ManifestError as e:
        raise ManifestError(e.message, field=e.field, source=str(p)) from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via temp file + fsync + rename + directory fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
