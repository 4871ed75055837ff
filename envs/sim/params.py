"""Frozen inputs of the restore simulator.

* :class:`HostSpec` - the replacement host: restore slots, CPU cores, I/O bandwidth.
* :class:`SimConfig` - allocation levels, time budget, validation and retry costs.
* :class:`Scenario` - a persona manifest plus the *hidden truth* a real host has but a
  capture does not show: soft dependencies between processes and how far each process's
  true CPU demand sits above its captured peak.
* :class:`EpisodeParams` - everything one episode needs as flat arrays: the scenario
  compiled, plus all randomness of the episode drawn up front (duration noise, failure
  draws, true demands). Drawing up front gives common random numbers across policies and
  lets the oracle know the future in hindsight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from persona.errors import ScenarioError
from persona.model import KINDS, ROLES, ComponentKind, PersonaManifest

MB = 1024 * 1024

KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
ROLE_INDEX = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class HostSpec:
    """The replacement host's restore capacity."""

    slots: int = 3  # restores that may run at once
    cpu_cores: float = 8.0  # shared by restores in flight and restored processes
    io_mb_s: float = 400.0  # shared equally by restores that move data

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ScenarioError(f"host.slots must be >= 1, got {self.slots}")
        if not self.cpu_cores > 0:
            raise ScenarioError(f"host.cpu_cores must be > 0, got {self.cpu_cores}")
        if not self.io_mb_s > 0:
            raise ScenarioError(f"host.io_mb_s must be > 0, got {self.io_mb_s}")


@dataclass(frozen=True)
class KindModel:
    """How long restoring a component of one kind takes, before contention.

    CPU work (core-seconds) = ``cpu_base_s + size_MB / cpu_mb_per_core_s``; a fraction
    ``serial`` of it cannot use more than one core. I/O work = ``size_MB * io_factor``
    (MB moved). ``fixed_s + size_MB * fixed_s_per_mb``: seconds of every attempt that use
    neither the restore's CPU share nor the shared I/O (waiting on a daemon, a channel round
    trip, page writes done by an unlimited process; measured on live hosts, 0 in the
    generated families).
    The realised duration of an attempt is multiplied by a log-normal factor with ``sigma``.
    """

    cpu_base_s: float
    cpu_mb_per_core_s: float
    io_factor: float
    serial: float
    sigma: float
    fixed_s: float = 0.0
    fixed_s_per_mb: float = 0.0


# Calibrated to orders of magnitude seen in the live lab (see docs): a CRIU restore of a
# small process is ~0.5-1 s, page copy dominates for large images; a filesystem diff is
# I/O bound; configs and module loads are quick; re-establishing network state is short
# but highly variable.
DEFAULT_KIND_MODELS: dict[ComponentKind, KindModel] = {
    ComponentKind.FILESYSTEM: KindModel(0.3, 250.0, 1.0, 0.5, 0.20),
    ComponentKind.KERNEL_MODULE: KindModel(0.4, 50.0, 1.0, 1.0, 0.20),
    ComponentKind.CONFIG: KindModel(0.3, 50.0, 1.0, 1.0, 0.10),
    ComponentKind.PROCESS: KindModel(1.0, 120.0, 1.0, 0.3, 0.30),
    ComponentKind.NETWORK: KindModel(1.5, 50.0, 0.0, 0.8, 0.40),
}


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulator that are not part of a scenario."""

    # Per-process CPU allocation levels, as multiples of the captured CPU peak.
    alloc_levels: tuple[float, ...] = (0.8, 1.2, 1.8)
    # CPU cores given to the restore work of non-process components, per level.
    restore_cores: tuple[float, ...] = (0.5, 1.0, 2.0)
    max_time_s: float = 600.0  # budget; an episode not validated by then has TTR = max_time_s
    validation_s: float = 6.0  # one run of the validation suite
    max_validation_rounds: int = 3
    restart_base_s: float = 3.0  # remediation: restart one process/component
    backoff_base_s: float = 2.0  # retry back-off after a failed restore: base * 2**(attempt-1)
    max_attempts: int = 6  # draws per component; attempts beyond this never fail
    latent_fraction: float = 0.35  # share of soft-dependency faults that stay latent
    background_factor: float = 0.6  # restored processes use this share of their demand
    invalid_action_s: float = 1.0  # an invalid action idles the restorer this long
    reward_scale: float = 0.01  # reward per simulated second
    kind_models: dict[ComponentKind, KindModel] = field(
        default_factory=lambda: dict(DEFAULT_KIND_MODELS)
    )

    def __post_init__(self) -> None:
        if len(self.alloc_levels) < 3 or len(self.restore_cores) != len(self.alloc_levels):
            raise ScenarioError(
                "alloc_levels needs >= 3 levels and restore_cores one entry per level"
            )
        if list(self.alloc_levels) != sorted(self.alloc_levels):
            raise ScenarioError("alloc_levels must be increasing")

    @property
    def n_levels(self) -> int:
        return len(self.alloc_levels)


# SimConfig fields a scenario may set (what calibration measures on a host)
SIM_OVERRIDABLE = ("validation_s", "restart_base_s", "backoff_base_s", "invalid_action_s")


@dataclass(frozen=True)
class SoftDependency:
    """Hidden: restoring ``process`` before ``needs`` is up fails with probability ``p_fail``."""

    process: str
    needs: str
    p_fail: float


@dataclass(frozen=True)
class Scenario:
    """A persona to restore, the host to restore it on, and the hidden truth."""

    name: str
    manifest: PersonaManifest
    host: HostSpec
    soft_dependencies: tuple[SoftDependency, ...] = ()
    # Hidden: log(true demand / captured peak) ~ Normal(mu, sigma), per process name.
    demand_mu: dict[str, float] = field(default_factory=dict)
    demand_sigma: dict[str, float] = field(default_factory=dict)
    family: str = "custom"
    # step-duration models of this kind of host (e.g. a VM), overriding SimConfig's per kind
    kind_models: dict[ComponentKind, KindModel] | None = None
    # SimConfig fields measured on this host (a calibrated live host: validation_s, ...)
    sim_overrides: dict[str, float] | None = None
    # step-duration models of single components (by name), overriding their kind's model: a
    # calibrated live host whose processes restore differently (one self-checks after a pause)
    component_models: dict[str, KindModel] | None = None

    def __post_init__(self) -> None:
        names = set(self.manifest.names)
        for s in self.soft_dependencies:
            for n in (s.process, s.needs):
                if n not in names:
                    raise ScenarioError(
                        f"scenario {self.name!r}: soft dependency names unknown component {n!r}"
                    )
            if not 0.0 <= s.p_fail <= 1.0:
                raise ScenarioError(
                    f"scenario {self.name!r}: p_fail of {s.process}->{s.needs} must be in [0, 1]"
                )
        if not self.manifest.components:
            raise ScenarioError(f"scenario {self.name!r} has no components")
        unknown = sorted(set(self.component_models or {}) - names)
        if unknown:
            raise ScenarioError(
                f"scenario {self.name!r}: component_models names unknown component {unknown[0]!r}"
            )
        bad = sorted(set(self.sim_overrides or {}) - set(SIM_OVERRIDABLE))
        if bad:
            raise ScenarioError(
                f"scenario {self.name!r}: sim.{bad[0]} cannot be set per scenario; "
                f"use one of {', '.join(SIM_OVERRIDABLE)}"
            )

    @property
    def n(self) -> int:
        return len(self.manifest.components)


@dataclass(frozen=True)
class EpisodeParams:
    """One episode, compiled to flat arrays (index = captured component order)."""

    scenario: Scenario
    config: SimConfig
    n: int
    kind: np.ndarray  # int   [n]
    role: np.ndarray  # int   [n]
    is_process: np.ndarray  # bool [n]
    size_mb: np.ndarray  # float [n]
    parents: np.ndarray  # bool [n, n]: parents[i, j] -> i hard-depends on j
    cpu_work: np.ndarray  # float [n]  nominal core-seconds
    io_work: np.ndarray  # float [n]  nominal MB moved
    serial: np.ndarray  # float [n]
    fixed: np.ndarray  # float [n]  seconds per attempt using neither CPU nor I/O
    usage: np.ndarray  # float [n]  captured mean CPU (processes; 0 otherwise)
    peak: np.ndarray  # float [n]  captured peak CPU (processes; 0 otherwise)
    peak_load: float  # captured aggregate peak of the host (cores)
    nominal_s: np.ndarray  # float [n] expected uncontended duration at the middle level
    # hidden / drawn up front
    soft: np.ndarray  # float [n, n]: soft[i, j] = P(fail) if i starts before j is done
    demand: np.ndarray  # float [n]  true CPU demand (processes)
    noise: np.ndarray  # float [n, R] work multiplier per attempt
    fail_u: np.ndarray  # float [n, R]
    latent_u: np.ndarray  # float [n, R]
    lists: Lists

    @property
    def host(self) -> HostSpec:
        return self.scenario.host


def attempt_duration(
    cpu_work: float, io_work: float, serial: float, cores: float, io_rate: float, fixed: float = 0.0
) -> float:
    """Duration of a restore doing ``cpu_work`` core-seconds on ``cores`` (a ``serial`` share
    on at most one core) and moving ``io_work`` MB at ``io_rate`` MB/s, overlapped, plus
    ``fixed`` seconds that use neither.

    The one formula for restore durations: the simulator's event loop, nominal durations
    and the oracle's bounds all call it (scalar floats: the event loop's sets are tiny).
    """
    cpu_t = cpu_work * (serial / min(cores, 1.0) + (1.0 - serial) / cores)
    io_t = io_work / io_rate
    return fixed + (cpu_t if cpu_t > io_t else io_t)


def nominal_duration(
    cpu_work: np.ndarray,
    io_work: np.ndarray,
    serial: np.ndarray,
    cores: np.ndarray,
    io_mb_s: float,
    fixed: np.ndarray,
) -> np.ndarray:
    """:func:`attempt_duration` over arrays of components."""
    return np.array(
        [
            attempt_duration(c, i, s, k, io_mb_s, f)
            for c, i, s, k, f in zip(
                cpu_work.tolist(),
                io_work.tolist(),
                serial.tolist(),
                cores.tolist(),
                fixed.tolist(),
                strict=True,
            )
        ]
    )


@dataclass(frozen=True)
class Lists:
    """Per-component values as Python lists, for the event loop's scalar arithmetic."""

    is_process: list[bool]
    cpu_work: list[float]
    io_work: list[float]
    serial: list[float]
    fixed: list[float]
    demand: list[float]
    noise: list[list[float]]
    soft_parents: list[list[tuple[int, float]]]  # per component: (needed component, p_fail)


DRAWS = ("noise", "fail_u", "latent_u", "demand")  # the draws compile_episode makes


def with_draws(p: EpisodeParams, source: EpisodeParams, names: Sequence[str]) -> EpisodeParams:
    """``p`` with the draws ``names`` (of :data:`DRAWS`) taken from ``source``, an episode of
    the same scenario (the hindsight experiment reveals parts of the true episode so)."""
    bad = [k for k in names if k not in DRAWS]
    if bad:
        raise ScenarioError(f"unknown draw(s) {bad}; use some of {', '.join(DRAWS)}")
    if source.n != p.n or source.scenario.name != p.scenario.name:
        raise ScenarioError("with_draws: the source episode is of another scenario")
    new = {k: getattr(source, k) for k in names}
    q = replace(p, **new)
    return replace(q, lists=replace(q.lists, demand=q.demand.tolist(), noise=q.noise.tolist()))


def compile_episode(
    scenario: Scenario, config: SimConfig, rng: np.random.Generator
) -> EpisodeParams:
    """Draw one episode's randomness and flatten the scenario (pure given ``rng``)."""
    if scenario.sim_overrides:
        config = replace(config, **scenario.sim_overrides)  # type: ignore[arg-type]
    comps = scenario.manifest.components
    n = len(comps)
    idx = scenario.manifest.index()
    parents = np.zeros((n, n), dtype=bool)
    rows: list[tuple[float, ...]] = []
    kind_l, role_l, proc_l = [], [], []
    overrides = scenario.kind_models or {}
    per_component = scenario.component_models or {}
    for i, c in enumerate(comps):
        for dep in c.depends_on:
            parents[i, idx[dep]] = True
        m = per_component.get(c.name) or overrides.get(c.kind) or config.kind_models[c.kind]
        size = c.size_bytes / MB
        use_i = peak_i = 0.0
        if c.is_process:
            r = c.resources
            if r is None:
                raise ScenarioError(
                    f"scenario {scenario.name!r}: process {c.name!r} has no captured resources; "
                    "the simulator needs cpu_usage_cores and cpu_peak_cores"
                )
            use_i = max(r.cpu_usage_cores, 0.01)
            peak_i = max(r.cpu_peak_cores, use_i)
        kind_l.append(KIND_INDEX[c.kind])
        role_l.append(ROLE_INDEX[c.role])
        proc_l.append(c.is_process)
        rows.append(
            (
                size,
                m.cpu_base_s + size / m.cpu_mb_per_core_s,
                size * m.io_factor,
                m.serial,
                m.sigma,
                m.fixed_s + size * m.fixed_s_per_mb,
                use_i,
                peak_i,
                scenario.demand_mu.get(c.name, 0.0),
                scenario.demand_sigma.get(c.name, 0.1),
            )
        )
    size_mb, cpu_work, io_work, serial, sigma, fixed, usage_a, peak_a, mu, sd = np.array(
        rows, dtype=np.float64
    ).T
    kind = np.array(kind_l, dtype=np.int64)
    role = np.array(role_l, dtype=np.int64)
    is_proc = np.array(proc_l, dtype=bool)
    mid = config.n_levels // 2
    cores = np.where(is_proc, peak_a * config.alloc_levels[mid], config.restore_cores[mid])
    nominal = nominal_duration(
        cpu_work, io_work, serial, np.maximum(cores, 0.05), scenario.host.io_mb_s, fixed
    )
    pairs = {(idx[d.process], idx[d.needs]): d.p_fail for d in scenario.soft_dependencies}
    soft = np.zeros((n, n))
    soft_parents: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (i, j), pf in sorted(pairs.items()):
        soft[i, j] = pf
        if pf > 0.0:
            soft_parents[i].append((j, pf))
    R = config.max_attempts
    # Two draws per episode, in a fixed layout: the same rng state gives the same episode.
    normal = rng.standard_normal(n * (R + 1))
    unif = rng.random(2 * n * R)
    noise = np.exp(normal[: n * R].reshape(n, R) * sigma[:, None] - 0.5 * sigma[:, None] ** 2)
    fail_u = unif[: n * R].reshape(n, R)
    latent_u = unif[n * R :].reshape(n, R)
    # truncated at 2.5 sigma: a host whose true demand no allocation level covers would be
    # unrecoverable by construction, which measures nothing about policies
    z = np.clip(normal[n * R :], -2.5, 2.5)
    demand = np.where(is_proc, peak_a * np.exp(mu + sd * z), 0.0)
    return EpisodeParams(
        scenario=scenario,
        config=config,
        n=n,
        kind=kind,
        role=role,
        is_process=is_proc,
        size_mb=size_mb,
        parents=parents,
        cpu_work=cpu_work,
        io_work=io_work,
        serial=serial,
        fixed=fixed,
        usage=usage_a,
        peak=peak_a,
        peak_load=float(scenario.manifest.load.peak_cpu_cores),
        nominal_s=nominal,
        soft=soft,
        demand=demand,
        noise=noise,
        fail_u=fail_u,
        latent_u=latent_u,
        lists=Lists(
            is_process=is_proc.tolist(),
            cpu_work=cpu_work.tolist(),
            io_work=io_work.tolist(),
            serial=serial.tolist(),
            fixed=fixed.tolist(),
            demand=demand.tolist(),
            noise=noise.tolist(),
            soft_parents=soft_parents,
        ),
    )
