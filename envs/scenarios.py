"""Scenarios: where personas to restore come from.

Addressed by URI:

* ``generator://<family>-v0?components=N`` (or ``components=A-B``, sampled per episode):
  a procedurally generated persona of a realistic host family, new for every episode.
  Families: ``web-tier``, ``db-heavy``, ``microservices``, ``random-dag`` and ``mixed``
  (samples one of the others per episode).
* ``scenario://<name>``: a hand-written YAML file ``configs/scenarios/<name>.yaml``.
* a path to a YAML scenario file, or to a persona manifest JSON (e.g. a live capture).

Every family has the same hidden structure (:data:`SOFT_RULES`, :data:`ROLE_DEMAND`):
soft dependencies between processes are keyed on their roles, and a process's true CPU
demand sits above or below its captured peak by a role-specific factor. A policy can
learn this structure from experience; the heuristics do not see it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import numpy as np
import yaml

from envs.sim.params import MB, HostSpec, KindModel, Scenario, SoftDependency
from persona.errors import ManifestError, ScenarioError
from persona.model import (
    Component,
    ComponentKind,
    HostInfo,
    LoadProfile,
    PersonaManifest,
    ResourceProfile,
    manifest_from_dict,
)

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "configs" / "scenarios"
# Step durations of a VM replacement host, fitted to measured `persona vm roundtrip` runs by
# `python -m experiments.calibrate_vm` (see configs/sim/vm-roundtrips/).
VM_KIND_MODELS = Path(__file__).resolve().parent.parent / "configs" / "sim" / "vm-host.yaml"
HOST_FLAVOURS = ("container", "vm")

# (process role, role it needs) -> probability that restoring it first fails.
SOFT_RULES: dict[tuple[str, str], float] = {
    ("app", "cache"): 0.7,
    ("app", "db"): 0.6,
    ("app", "queue"): 0.4,
    ("worker", "queue"): 0.7,
    ("worker", "db"): 0.5,
    ("worker", "cache"): 0.3,
    ("proxy", "app"): 0.5,
    ("sidecar", "app"): 0.3,
}
# role -> (mu, sigma) of log(true demand / captured peak).
ROLE_DEMAND: dict[str, tuple[float, float]] = {
    "proxy": (0.0, 0.08),
    "app": (0.05, 0.08),
    "cache": (-0.35, 0.08),
    "db": (0.35, 0.08),
    "queue": (-0.1, 0.08),
    "worker": (-0.3, 0.08),
    "sidecar": (-0.35, 0.08),
}
DEFAULT_DEMAND = (0.0, 0.12)


class ScenarioSource(Protocol):
    """Something that yields a scenario per episode."""

    @property
    def name(self) -> str: ...

    @property
    def max_components(self) -> int: ...

    def sample(self, rng: np.random.Generator) -> Scenario: ...


@dataclass(frozen=True)
class FixedScenario:
    scenario: Scenario

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def max_components(self) -> int:
        return self.scenario.n

    def sample(self, rng: np.random.Generator) -> Scenario:
        return self.scenario


# ---------------------------------------------------------------------------------------
# hidden structure from roles


def hidden_from_roles(
    manifest: PersonaManifest, calls: set[tuple[str, str]] | None = None
) -> tuple[tuple[SoftDependency, ...], dict[str, float], dict[str, float]]:
    """Soft dependencies and demand parameters implied by the components' roles.

    ``calls`` restricts soft dependencies between two ``app`` processes to pairs that
    actually call each other (microservices); rules between different roles always apply.
    """
    procs = [c for c in manifest.components if c.is_process]
    soft: list[SoftDependency] = []
    for a in procs:
        for b in procs:
            if a.name == b.name:
                continue
            p = SOFT_RULES.get((a.role, b.role), 0.0)
            if a.role == b.role == "app" and calls is not None and (a.name, b.name) in calls:
                p = 0.5
            if p > 0:
                soft.append(SoftDependency(a.name, b.name, p))
    mu = {c.name: ROLE_DEMAND.get(c.role, DEFAULT_DEMAND)[0] for c in procs}
    sd = {c.name: ROLE_DEMAND.get(c.role, DEFAULT_DEMAND)[1] for c in procs}
    return tuple(soft), mu, sd


# ---------------------------------------------------------------------------------------
# generators

# role -> (memory MB log-uniform range, mean CPU cores log-uniform range)
ROLE_PROFILE: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "proxy": ((30, 120), (0.2, 0.6)),
    "app": ((150, 700), (0.4, 1.2)),
    "cache": ((200, 2000), (0.2, 0.7)),
    "db": ((500, 4000), (0.5, 1.6)),
    "queue": ((100, 500), (0.2, 0.6)),
    "worker": ((100, 500), (0.3, 1.0)),
    "sidecar": ((20, 80), (0.05, 0.2)),
}
PROCESS_ROLES = tuple(ROLE_PROFILE)
MODULES = ("nf_conntrack", "overlay", "br_netfilter", "xt_conntrack", "veth")


class Draws:
    """Uniform draws taken from a numpy Generator in blocks.

    Generating a persona needs ~50 small random choices; one Generator call per choice
    costs more than the rest of the generator. Deterministic given the Generator's state.
    """

    def __init__(self, rng: np.random.Generator, block: int = 64) -> None:
        self.rng = rng
        self.block = block
        self.buf: list[float] = []

    def random(self) -> float:
        if not self.buf:
            self.buf = self.rng.random(self.block).tolist()
        return self.buf.pop()

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def logu(self, lo: float, hi: float) -> float:
        """Log-uniform in [lo, hi]."""
        return math.exp(self.uniform(math.log(lo), math.log(hi)))

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] (inclusive)."""
        return min(lo + int(self.random() * (hi - lo + 1)), hi)

    def pick(self, options: tuple[str, ...]) -> str:
        return options[self.integer(0, len(options) - 1)]

    def shuffle(self, items: list[Any]) -> None:
        for i in range(len(items) - 1, 0, -1):  # Fisher-Yates
            j = self.integer(0, i)
            items[i], items[j] = items[j], items[i]

    def permutation(self, n: int) -> list[int]:
        order = list(range(n))
        self.shuffle(order)
        return order


@dataclass(frozen=True)
class FamilySpec:
    name: str
    default_components: tuple[int, int]
    slots: tuple[int, int]
    roles: Callable[[Draws], Iterator[str]]
    memory_scale: float = 1.0
    fs_mb: tuple[float, float] = (10, 400)
    io_mb_s: tuple[float, float] = (250, 600)
    fs_prob: float = 0.6


def _web_roles(d: Draws) -> Iterator[str]:
    first = ["db", "cache", "app", "proxy"]
    d.shuffle(first)
    yield from first
    while True:
        yield d.pick(("app", "app", "worker", "queue", "cache"))


def _db_roles(d: Draws) -> Iterator[str]:
    yield from ("db", "app", "db")
    while True:
        yield d.pick(("db", "db", "db", "db", "worker", "worker", "worker", "app", "app", "cache"))


def _micro_roles(d: Draws) -> Iterator[str]:
    first = ["queue", "cache", "app", "db"]
    d.shuffle(first)
    yield from first
    while True:
        yield d.pick(("app", "sidecar", "worker", "app"))


def _random_roles(d: Draws) -> Iterator[str]:
    while True:
        yield d.pick(PROCESS_ROLES)


FAMILIES: dict[str, FamilySpec] = {
    "web-tier": FamilySpec("web-tier", (6, 14), (3, 3), _web_roles),
    "db-heavy": FamilySpec(
        "db-heavy", (5, 12), (2, 3), _db_roles, memory_scale=2.0, fs_mb=(500, 3000), fs_prob=0.8
    ),
    "microservices": FamilySpec(
        "microservices", (8, 20), (4, 4), _micro_roles, memory_scale=0.5, fs_mb=(5, 100)
    ),
    "random-dag": FamilySpec("random-dag", (5, 15), (2, 4), _random_roles),
}
MIXED = ("web-tier", "db-heavy", "microservices", "random-dag")


def generate(family: str, n: int, rng: np.random.Generator | Draws) -> Scenario:
    """Generate one scenario of ``family`` with exactly ``n`` components."""
    d = rng if isinstance(rng, Draws) else Draws(rng)
    spec = FAMILIES[family]
    if n < 2:
        raise ScenarioError(f"generator://{family}-v0 needs components >= 2, got {n}")
    n_mod = 0 if n < 6 else (1 if n < 14 else 2)
    n_net = 1 if n >= 4 else 0
    budget = n - n_mod - n_net
    comps: list[Component] = []
    modules = [MODULES[k] for k in d.permutation(len(MODULES))[:n_mod]]
    for k, m in enumerate(modules):
        comps.append(
            Component(
                name=f"kmod-{m}",
                kind=ComponentKind.KERNEL_MODULE,
                size_bytes=int(d.logu(40, 600) * 1024),
                depends_on=(f"kmod-{modules[k - 1]}",) if k else (),
                role="system",
                attributes={"load_position": k, "parameters": {}},
            )
        )
    roles = spec.roles(d)
    services: list[tuple[str, list[Component]]] = []
    counter: dict[str, int] = {}
    while budget > 0:
        role = next(roles)
        counter[role] = counter.get(role, 0) + 1
        svc = f"{role}-{counter[role]}"
        parts: list[Component] = []
        deps: list[str] = []
        want_cfg = budget >= 2 and d.random() < 0.85
        want_fs = budget >= 2 + int(want_cfg) and d.random() < spec.fs_prob
        if want_fs:
            fs_deps = tuple(c.name for c in comps if c.name in ("kmod-overlay",))
            parts.append(
                Component(
                    name=f"{svc}/fs",
                    kind=ComponentKind.FILESYSTEM,
                    size_bytes=int(d.logu(*spec.fs_mb) * MB),
                    depends_on=fs_deps,
                    role="storage",
                    attributes={"container": svc},
                )
            )
            deps.append(f"{svc}/fs")
        if want_cfg:
            parts.append(
                Component(
                    name=f"{svc}/config",
                    kind=ComponentKind.CONFIG,
                    size_bytes=int(d.logu(2, 64) * 1024),
                    depends_on=tuple(deps),
                    role=role,
                    attributes={"container": svc},
                )
            )
            deps.append(f"{svc}/config")
        mem_range, cpu_range = ROLE_PROFILE[role]
        mem_mb = d.logu(mem_range[0] * spec.memory_scale, mem_range[1] * spec.memory_scale)
        usage = d.logu(*cpu_range)
        peak = usage * d.uniform(1.2, 2.0)
        parts.append(
            Component(
                name=f"{svc}/proc",
                kind=ComponentKind.PROCESS,
                size_bytes=int(mem_mb * MB),
                depends_on=tuple(deps),
                role=role,
                resources=ResourceProfile(
                    cpu_usage_cores=round(usage, 4),
                    cpu_peak_cores=round(peak, 4),
                    memory_bytes=int(mem_mb * MB),
                    memory_peak_bytes=int(mem_mb * MB * 1.1),
                    window_s=60.0,
                    samples=60,
                ),
                attributes={"container": svc},
            )
        )
        services.append((svc, parts))
        budget -= len(parts)
    order = d.permutation(len(services))  # captured order: the engine's listing order
    for k in order:
        comps.extend(services[k][1])
    procs = [c for c in comps if c.is_process]
    if family == "random-dag":
        # extra random hard edges between processes, along a random order
        perm = d.permutation(len(procs))
        ranked = [procs[i].name for i in perm]
        extra: dict[str, list[str]] = {}
        for a in range(len(ranked)):
            for b in range(a):
                if d.random() < 0.2:
                    extra.setdefault(ranked[a], []).append(ranked[b])
        comps = [replace(c, depends_on=c.depends_on + tuple(extra.get(c.name, ()))) for c in comps]
        procs = [c for c in comps if c.is_process]
    if n_net:
        comps.append(
            Component(
                name="network",
                kind=ComponentKind.NETWORK,
                size_bytes=int(d.logu(4, 64) * 1024),
                depends_on=tuple(c.name for c in procs),
                role="system",
                attributes={"connections": d.integer(4, 199)},
            )
        )
    sum_peak = sum(c.resources.cpu_peak_cores for c in procs if c.resources)
    sum_demand = 0.0
    for c in procs:
        mu_r, sd_r = ROLE_DEMAND.get(c.role, DEFAULT_DEMAND)
        sum_demand += c.resources.cpu_peak_cores * math.exp(mu_r + 2 * sd_r) if c.resources else 0.0
    manifest = PersonaManifest(
        host=HostInfo(
            name=f"{family}-host", captured_at="1970-01-01T00:00:00Z", labels={"generator": family}
        ),
        components=tuple(comps),
        load=LoadProfile(peak_cpu_cores=round(0.9 * sum_peak, 4), window_s=60.0),
    )
    calls: set[tuple[str, str]] = set()
    if family == "microservices":
        apps = [c.name for c in procs if c.role == "app"]
        for caller in apps:
            callees = [b for b in apps if b != caller]
            d.shuffle(callees)
            for callee in callees[: 1 + int(d.random() < 0.5)]:
                calls.add((caller, callee))
    soft, mu, sd = hidden_from_roles(manifest, calls)
    lo, hi = spec.slots
    host = HostSpec(
        slots=d.integer(lo, hi),
        # the original host was sized for its processes' true demand, with some headroom
        cpu_cores=round(max(2.0, sum_demand * d.uniform(1.1, 1.3)), 2),
        io_mb_s=round(d.uniform(*spec.io_mb_s), 1),
    )
    return Scenario(
        name=f"{family}-v0#n{n}",
        manifest=manifest,
        host=host,
        soft_dependencies=soft,
        demand_mu=mu,
        demand_sigma=sd,
        family=family,
    )


def vm_flavour(sc: Scenario, kind_models: dict[ComponentKind, KindModel]) -> Scenario:
    """The same persona restored onto a VM: measured VM step durations, and one restore at a
    time (every step goes through the guest's one agent channel)."""
    return replace(
        sc,
        name=sc.name + "@vm",
        kind_models=kind_models,
        host=replace(sc.host, slots=1),
    )


@dataclass(frozen=True)
class GeneratorSource:
    family: str  # a FAMILIES key or "mixed"
    components: tuple[int, int]  # inclusive range
    host: str = "container"  # or "vm"

    @property
    def name(self) -> str:
        lo, hi = self.components
        n = str(lo) if lo == hi else f"{lo}-{hi}"
        flavour = "" if self.host == "container" else f"&host={self.host}"
        return f"generator://{self.family}-v0?components={n}{flavour}"

    @property
    def max_components(self) -> int:
        return self.components[1]

    def sample(self, rng: np.random.Generator) -> Scenario:
        d = Draws(rng)
        family = d.pick(MIXED) if self.family == "mixed" else self.family
        lo, hi = self.components
        sc = generate(family, d.integer(lo, hi), d)
        return vm_flavour(sc, _vm_kind_models()) if self.host == "vm" else sc


# ---------------------------------------------------------------------------------------
# YAML / JSON files


def _scenario_from_obj(obj: Any, source: str) -> Scenario:
    if not isinstance(obj, dict):
        raise ScenarioError(
            f"{source}: a scenario file must be a mapping with 'name', 'host', 'persona'"
        )
    allowed = {
        "name", "description", "family", "host", "persona", "hidden", "kind_models", "sim",
        "component_models",
    }
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ScenarioError(
            f"{source}: unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    for key in ("name", "persona"):
        if key not in obj:
            raise ScenarioError(f"{source}: field {key!r} is required")
    try:
        manifest = manifest_from_dict(obj["persona"])
    except ManifestError as e:
        raise ScenarioError(
            f"{source}: persona.{e.field}: {e.message}"
            if e.field
            else f"{source}: persona: {e.message}"
        ) from None
    host_obj = obj.get("host", {}) or {}
    if not isinstance(host_obj, dict):
        raise ScenarioError(f"{source}: host must be a mapping (slots, cpu_cores, io_mb_s)")
    bad = sorted(set(host_obj) - {"slots", "cpu_cores", "io_mb_s"})
    if bad:
        raise ScenarioError(f"{source}: host.{bad[0]} is unknown; use slots, cpu_cores, io_mb_s")
    try:
        host = HostSpec(**host_obj)
    except (TypeError, ScenarioError) as e:
        raise ScenarioError(f"{source}: host: {e}") from None
    soft, mu, sd = hidden_from_roles(manifest)
    hidden = obj.get("hidden") or {}
    if not isinstance(hidden, dict):
        raise ScenarioError(f"{source}: hidden must be a mapping")
    if "soft_dependencies" in hidden:
        items = hidden["soft_dependencies"] or []
        parsed = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"process", "needs", "p_fail"}:
                raise ScenarioError(
                    f"{source}: hidden.soft_dependencies[{k}] needs exactly process, needs, p_fail"
                )
            parsed.append(
                SoftDependency(str(item["process"]), str(item["needs"]), float(item["p_fail"]))
            )
        soft = tuple(parsed)
    for name, d in (hidden.get("demand") or {}).items():
        if name not in mu:
            raise ScenarioError(f"{source}: hidden.demand.{name}: not a process of this persona")
        if not isinstance(d, dict) or not set(d) <= {"mu", "sigma"}:
            raise ScenarioError(f"{source}: hidden.demand.{name} must be a mapping of mu, sigma")
        mu[name] = float(d.get("mu", mu[name]))
        sd[name] = float(d.get("sigma", sd[name]))
    kind_models = _kind_models_from_obj(obj.get("kind_models"), source)
    component_models = _component_models_from_obj(obj.get("component_models"), source)
    sim = obj.get("sim") or None
    if sim is not None:
        if not isinstance(sim, dict) or not all(
            isinstance(v, (int, float)) and v >= 0 for v in sim.values()
        ):
            raise ScenarioError(f"{source}: sim must be a mapping of field -> seconds (>= 0)")
        sim = {str(k): float(v) for k, v in sim.items()}
    try:
        return Scenario(
            name=str(obj["name"]),
            manifest=manifest,
            host=host,
            soft_dependencies=soft,
            demand_mu=mu,
            demand_sigma=sd,
            family=str(obj.get("family", "custom")),
            kind_models=kind_models,
            sim_overrides=sim,
            component_models=component_models,
        )
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None


def _model_from_obj(v: Any, where: str) -> KindModel:
    try:
        return KindModel(**{f: float(x) for f, x in v.items()})
    except (TypeError, AttributeError, ValueError) as e:
        raise ScenarioError(
            f"{where}: {e}; fields are cpu_base_s, cpu_mb_per_core_s, "
            "io_factor, serial, sigma, fixed_s, fixed_s_per_mb"
        ) from None


def _component_models_from_obj(obj: Any, source: str) -> dict[str, KindModel] | None:
    """``component_models: {<component name>: <model, as in kind_models>}`` (what ``persona
    calibrate`` writes for components with steps enough of their own)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ScenarioError(f"{source}: component_models must be a mapping of component -> model")
    return {str(k): _model_from_obj(v, f"{source}: component_models.{k}") for k, v in obj.items()}


def _kind_models_from_obj(obj: Any, source: str) -> dict[ComponentKind, KindModel] | None:
    """``kind_models: {<kind>: {cpu_base_s, cpu_mb_per_core_s, io_factor, serial, sigma,
    fixed_s, fixed_s_per_mb}}`` (what ``persona calibrate`` writes); kinds left out keep the
    defaults."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ScenarioError(f"{source}: kind_models must be a mapping of kind -> model")
    out = {}
    for k, v in obj.items():
        try:
            kind = ComponentKind(k)
        except ValueError:
            kinds = ", ".join(c.value for c in ComponentKind)
            raise ScenarioError(f"{source}: kind_models.{k}: unknown kind; use {kinds}") from None
        out[kind] = _model_from_obj(v, f"{source}: kind_models.{k}")
    return out


def load_scenario_file(path: str | Path) -> Scenario:
    """A YAML scenario file, or a persona manifest JSON (host capacity then defaults)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ScenarioError(f"cannot read scenario file {p}: {e.strerror}") from e
    if p.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScenarioError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from e
        if isinstance(obj, dict) and "schema_version" in obj:
            obj = {"name": p.stem, "persona": obj}
        return _scenario_from_obj(obj, str(p))
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError(f"{p}: not valid YAML: {e}") from e
    return _scenario_from_obj(obj, str(p))


_GEN = re.compile(r"^(?P<family>[a-z-]+)-v0$")


def resolve(uri: str | ScenarioSource | Scenario) -> ScenarioSource:
    """Turn a scenario URI (or object) into a :class:`ScenarioSource`."""
    if isinstance(uri, Scenario):
        return FixedScenario(uri)
    if not isinstance(uri, str):
        return uri
    if uri.startswith("generator://"):
        u = urlparse(uri)
        m = _GEN.match(u.netloc)
        families = ", ".join([*FAMILIES, "mixed"])
        if not m or (m["family"] not in FAMILIES and m["family"] != "mixed"):
            raise ScenarioError(
                f"unknown generator {u.netloc!r} in {uri!r}; use <family>-v0 with family one of {families}"
            )
        family = m["family"]
        q = parse_qs(u.query)
        bad = sorted(set(q) - {"components", "host"})
        if bad:
            raise ScenarioError(
                f"unknown parameter {bad[0]!r} in {uri!r}; use 'components' and 'host'"
            )
        host = q.get("host", ["container"])[-1]
        if host not in HOST_FLAVOURS:
            raise ScenarioError(f"host={host!r} in {uri!r}: use one of {', '.join(HOST_FLAVOURS)}")
        lo, hi = FAMILIES[family].default_components if family != "mixed" else (5, 16)
        if "components" in q:
            raw = q["components"][-1]
            mm = re.fullmatch(r"(\d+)(?:-(\d+))?", raw)
            if not mm:
                raise ScenarioError(f"components={raw!r} in {uri!r} must be N or A-B (integers)")
            lo = int(mm[1])
            hi = int(mm[2]) if mm[2] else lo
            if lo < 2 or hi < lo:
                raise ScenarioError(f"components={raw!r} in {uri!r}: need 2 <= A <= B")
        if host == "vm":
            _vm_kind_models()  # fail now, not at the first episode, if the calibration is missing
        return GeneratorSource(family, (lo, hi), host)
    if uri.startswith("scenario://"):
        name = uri[len("scenario://") :]
        path = SCENARIO_DIR / f"{name}.yaml"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.exists():
            known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
            raise ScenarioError(f"unknown scenario {uri!r}; known: {known}")
        return FixedScenario(load_scenario_file(path))
    p = Path(uri)
    if p.suffix in (".yaml", ".yml", ".json"):
        if not p.exists():
            raise ScenarioError(f"scenario file {uri!r} does not exist")
        return FixedScenario(load_scenario_file(p))
    raise ScenarioError(
        f"cannot read scenario {uri!r}: use generator://<family>-v0?components=N, "
        "scenario://<name> or a path to a .yaml/.json file"
    )


def scenario_path(uri: str) -> str:
    """The file behind ``scenario://<name>`` or a path (checked to exist)."""
    if uri.startswith("scenario://"):
        name = uri[len("scenario://") :]
        path = SCENARIO_DIR / f"{name}.yaml"
    else:
        path = Path(uri)
    if not path.is_file():
        raise ScenarioError(f"scenario {uri!r}: no such file {path}")
    return str(path)


@functools.lru_cache(maxsize=1)
def _vm_kind_models() -> dict[ComponentKind, KindModel]:
    from envs.calibration import load_kind_models

    return load_kind_models(VM_KIND_MODELS)


def list_scenarios() -> list[str]:
    return [f"scenario://{p.stem}" for p in sorted(SCENARIO_DIR.glob("*.yaml"))]
