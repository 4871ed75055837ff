"""Restore plans as pure data, and the pure decisions the provisioner takes from them.

A :class:`Plan` is an ordered tuple of :class:`Step` (component + allocation level) chosen by a
policy: a baseline heuristic by name (:func:`agents.baselines.make_policy`) or an exported ONNX
policy (``*.onnx`` through :mod:`persona.restorer`). Both run closed-loop on the simulator of
the captured persona; the plan is the order in which they start components and the level they
give each (a retried component keeps its first position and its last level).

Nothing here talks to Docker or CRIU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from persona.errors import PolicyError, RestoreError
from persona.lab import spec as lab_spec
from persona.model import ComponentKind, PersonaManifest

ALLOC_LEVELS: tuple[float, ...] = (0.8, 1.2, 1.8)  # envs.sim.params.SimConfig's defaults
MIN_CPU_CORES = 0.05  # never hand a process less than this (the engine's quota granularity)


@dataclass(frozen=True)
class Step:
    component: str
    kind: str  # ComponentKind value
    role: str
    level: int  # allocation level index into ``Plan.levels``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    host: str
    policy: str
    steps: tuple[Step, ...]
    levels: tuple[float, ...] = ALLOC_LEVELS
    predicted_ttr_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "policy": self.policy,
            "levels": list(self.levels),
            "predicted_ttr_s": self.predicted_ttr_s,
            "steps": [s.to_dict() for s in self.steps],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Plan:
        return Plan(
            str(d["host"]),
            str(d["policy"]),
            tuple(
                Step(str(s["component"]), str(s["kind"]), str(s["role"]), int(s["level"]))
                for s in d["steps"]
            ),
            tuple(float(x) for x in d.get("levels", ALLOC_LEVELS)),
            d.get("predicted_ttr_s"),
        )

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(s.component for s in self.steps)


# ------------------------------------------------------------------------------ from policies


def dedupe(decisions: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Simulator decisions (component, level), retries included -> one entry per component at
    its first position with its last level."""
    pos: dict[str, int] = {}
    out: list[tuple[str, int]] = []
    for name, level in decisions:
        if name in pos:
            out[pos[name]] = (name, level)
        else:
            pos[name] = len(out)
            out.append((name, level))
    return out


def check_plan(manifest: PersonaManifest, plan: Plan) -> None:
    """Every component exactly once, hard dependencies before their dependents, levels valid."""
    names = set(manifest.names)
    seen: set[str] = set()
    for i, s in enumerate(plan.steps):
        if s.component not in names:
            raise RestoreError(
                f"plan step {i}: {s.component!r} is not a component of "
                f"{manifest.host.name}'s persona; re-plan from this manifest"
            )
        if s.component in seen:
            raise RestoreError(f"plan step {i}: {s.component!r} appears twice")
        if not 0 <= s.level < len(plan.levels):
            raise RestoreError(f"plan step {i}: level {s.level} outside 0..{len(plan.levels) - 1}")
        missing = [d for d in manifest.component(s.component).depends_on if d not in seen]
        if missing:
            raise RestoreError(
                f"plan step {i}: {s.component} before its dependencies {', '.join(missing)}"
            )
        seen.add(s.component)
    left = names - seen
    if left:
        raise RestoreError(f"plan leaves out {', '.join(sorted(left))}")


def _build(
    manifest: PersonaManifest,
    policy: str,
    decisions: Sequence[tuple[str, int]],
    predicted: float | None,
) -> Plan:
    kinds = {c.name: c for c in manifest.components}
    steps = tuple(Step(n, kinds[n].kind.value, kinds[n].role, lv) for n, lv in dedupe(decisions))
    plan = Plan(manifest.host.name, policy, steps, ALLOC_LEVELS, predicted)
    check_plan(manifest, plan)
    return plan


def is_onnx(policy: str) -> bool:
    """A learned policy: an ``.onnx`` file, or the search-based restorer over one
    (``search:POLICY.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]]``)."""
    from persona.restorer.plan import search_fields

    return policy.endswith(".onnx") or search_fields(policy) is not None


def plan_from_policy(manifest: PersonaManifest, policy: str, seed: int = 0) -> Plan:
    """The plan of a baseline (by name) or of an exported ONNX policy (a ``.onnx`` path)."""
    if is_onnx(policy):
        if policy.endswith(".onnx") and not Path(policy).exists():
            raise PolicyError(
                f"policy file {policy} does not exist; export one with persona export"
            )
        from agents.experiment import label
        from persona.restorer import plan_restore

        rp = plan_restore(manifest, policy, seed=seed)
        return _build(
            manifest,
            label(policy),
            [(s.component, s.level) for s in rp.steps],
            rp.predicted_ttr,
        )
    return _plan_baseline(manifest, policy, seed)


def _plan_baseline(manifest: PersonaManifest, name: str, seed: int) -> Plan:
    from agents.baselines import PolicyContext, make_policy
    from envs.restore_env import RestoreEnv
    from envs.scenarios import hidden_from_roles
    from envs.sim.params import HostSpec, Scenario

    pol = make_policy(name)
    soft, mu, sd = hidden_from_roles(manifest)
    sc = Scenario(
        name=manifest.host.name,
        manifest=manifest,
        host=HostSpec(),
        soft_dependencies=soft,
        demand_mu=mu,
        demand_sigma=sd,
    )
    env = RestoreEnv(scenario=sc)
    obs, _ = env.reset(seed=seed)
    if tuple(env.config.alloc_levels) != ALLOC_LEVELS:
        raise PolicyError(
            f"simulator levels {env.config.alloc_levels} differ from the "
            f"provisioner's {ALLOC_LEVELS}"
        )
    pol.begin_episode(PolicyContext(env.config, env.n_max), seed)
    L = env.config.n_levels
    wait = env.n_max * L
    comps = manifest.components
    decisions: list[tuple[str, int]] = []
    info: dict[str, Any] = {}
    while True:
        a = pol.act(obs, env.action_masks())
        if a != wait:
            i, lv = divmod(int(a), L)
            decisions.append((comps[i].name, int(lv)))
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    pol.end_episode(info)
    return _build(manifest, name, decisions, float(info["ttr"]))


def captured_order_plan(manifest: PersonaManifest, level: int = 1) -> Plan:
    """Every component in captured (topological) order at one level: the 'captured order' method."""
    return _build(
        manifest, "captured-order", [(n, level) for n in manifest.topological_order()], None
    )


# ------------------------------------------------------------------------- adaptive tweaks


def adjust_plan(
    manifest: PersonaManifest, plan: Plan, defer: Mapping[str, float], boost: Mapping[str, int]
) -> Plan:
    """Apply learned metadata: roles with a ``defer`` weight move later (never before their
    hard dependencies), process levels of a role are raised/lowered by ``boost``."""
    L = len(plan.levels)
    pos = {s.component: i for i, s in enumerate(plan.steps)}
    key = {
        s.component: pos[s.component] + len(plan.steps) * defer.get(s.role, 0.0) for s in plan.steps
    }
    done: set[str] = set()
    left = list(plan.steps)
    out: list[Step] = []
    while left:
        ready = [
            s for s in left if all(d in done for d in manifest.component(s.component).depends_on)
        ]
        s = min(ready, key=lambda x: (key[x.component], pos[x.component]))
        left.remove(s)
        done.add(s.component)
        lv = s.level
        if s.kind == ComponentKind.PROCESS.value:
            lv = min(max(lv + int(boost.get(s.role, 0)), 0), L - 1)
        out.append(replace(s, level=lv))
    res = replace(plan, steps=tuple(out))
    check_plan(manifest, res)
    return res


# --------------------------------------------------------------------- pure apply decisions


def cpu_allocation(
    level_mult: float, peak_cores: float | None, limit_cores: float | None
) -> float | None:
    """CPU cores for a restored process. Its captured need is the larger of its configured
    limit and its sampled peak; the level scales that need, and the captured limit is a floor
    (a replacement never gets less than the original's configuration): 0.8x holds the limit,
    1.2x and 1.8x raise it. A process captured without a limit stays unlimited (None)."""
    need = cpu_need(peak_cores, limit_cores)
    if need is None or limit_cores is None:
        return None
    return round(max(limit_cores, level_mult * need, MIN_CPU_CORES), 4)


def cpu_need(peak_cores: float | None, limit_cores: float | None) -> float | None:
    """A process's captured CPU need: the larger of its configured limit and its sampled peak
    (``None``: captured without a limit, so restored unlimited at every level)."""
    if limit_cores is None:
        return None
    return max(limit_cores, peak_cores or 0.0)


def lock_release_after(process_order: Sequence[str], connections: Iterable[tuple[str, str]]) -> int:
    """Index (into ``process_order``) of the restore after which the netns lock can go: both
    ends of every captured connection are back. -1: no connection, no lock needed."""
    idx = {n: i for i, n in enumerate(process_order)}
    last = -1
    for a, b in connections:
        if a in idx and b in idx:
            last = max(last, idx[a], idx[b])
    return last


def _joined(manifest: PersonaManifest) -> list[tuple[str | None, str | None]]:
    """The network component's captured joins as (client, server) process components; None
    where an end is not one of the host's processes (a peer outside the host)."""
    net = next((c for c in manifest.components if c.kind == ComponentKind.NETWORK), None)
    if net is None:
        return []
    by_container = {
        str(c.attributes.get("container")): c.name
        for c in manifest.components
        if c.kind == ComponentKind.PROCESS
    }
    return [
        (by_container.get(str(j.get("client"))), by_container.get(str(j.get("server"))))
        for j in net.attributes.get("joins", []) or []
    ]


def connections(manifest: PersonaManifest) -> list[tuple[str, str]]:
    """Captured (client, server) process component pairs from the network component's joins."""
    return sorted({(a, b) for a, b in _joined(manifest) if a and b and a != b})


def external_holders(manifest: PersonaManifest) -> list[str]:
    """Process components holding captured connections to peers outside the host (a client of
    the service): their restore must happen behind the netns lock too, or the peer's
    retransmissions / resets reach the socket CRIU is repairing and the restore fails
    ("Can't restore not-sent send queue data ... Connection reset by peer")."""
    return sorted({a or b for a, b in _joined(manifest) if (a is None) != (b is None)})  # type: ignore[misc]


def lock_pairs(manifest: PersonaManifest) -> list[tuple[str, str]]:
    """What the netns lock waits for: both ends of every internal connection, and every
    holder of an external one (a pair with itself)."""
    return connections(manifest) + [(p, p) for p in external_holders(manifest)]


def host_ip(manifest: PersonaManifest) -> str:
    net = next((c for c in manifest.components if c.kind == ComponentKind.NETWORK), None)
    for a in (net.attributes.get("addresses", []) if net else []) or []:
        if a.get("family") == "inet" and a.get("ifname") != "lo":
            return str(a["addr"]).split("/")[0]
    raise RestoreError(
        f"persona of {manifest.host.name} has no captured non-loopback IPv4 "
        "address; cannot give the replacement the same IP"
    )


@dataclass(frozen=True)
class Replacement:
    """What the provisioner creates: container specs (namespace owner first) and per process
    component its container, checkpoint folder and config files."""

    specs: tuple[lab_spec.ContainerSpec, ...]
    process_container: Mapping[str, str] = field(
        default_factory=dict
    )  # component -> container name
    checkpoint: Mapping[str, str] = field(default_factory=dict)  # component -> data path
    fs_archive: Mapping[str, str] = field(default_factory=dict)  # component -> (container, tar)
    fs_container: Mapping[str, str] = field(default_factory=dict)  # component -> container name
    config_files: Mapping[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)
    # config component -> ((container, path in container, data path), ...)


def replacement(
    manifest: PersonaManifest, ip: str | None = None, cpu_limits: bool = False
) -> Replacement:
    """Container specs for the replacement of ``manifest``'s host, from the manifest (images,
    commands, memory limits) plus the lab's role defaults for labels. Pure.

    CPU is an allocation decision applied per process step (``cpu_limits=False``); a cold
    start creates the containers with their captured CPU limits instead."""
    host = manifest.host.name
    ip = ip or host_ip(manifest)
    lab_defaults = {s.role: s for s in lab_spec.demo_specs(host, ip=ip, with_load=False)}
    prefix = f"persona-{host}-"
    fs_container: dict[str, str] = {}
    fs_archive: dict[str, str] = {}
    images: dict[str, str] = {}
    for c in manifest.components:
        if c.kind == ComponentKind.FILESYSTEM:
            ctr = str(c.attributes["container"])
            fs_container[c.name] = ctr
            images[ctr] = str(c.attributes["image"])
            if c.data:
                fs_archive[c.name] = c.data[0]
    procs = {
        str(c.attributes["container"]): c
        for c in manifest.components
        if c.kind == ComponentKind.PROCESS
    }
    owner = next((ctr for ctr in images if ctr not in procs), None)
    if owner is None:
        raise RestoreError(
            f"persona of {host} has no namespace owner (a container without a "
            "process dump, e.g. the pause container)"
        )
    cfg: dict[str, list[tuple[str, str, str]]] = {}
    for c in manifest.components:
        if c.kind == ComponentKind.CONFIG:
            for d in c.data:  # config/<container>/<absolute path in the container>
                parts = d.split("/")
                if len(parts) < 3 or parts[0] != "config":
                    raise RestoreError(
                        f"{c.name}: config data path {d!r} is not config/<container>/<path>"
                    )
                cfg.setdefault(c.name, []).append((parts[1], "/" + "/".join(parts[2:]), d))
    specs: list[lab_spec.ContainerSpec] = []
    pause_role = owner[len(prefix) :] if owner.startswith(prefix) else "pause"
    base = lab_defaults.get(pause_role)
    specs.append(
        lab_spec.ContainerSpec(
            owner,
            images[owner],
            base.command if base else ("/bin/sleep", "2147483647"),
            pause_role,
            host,
            ip=ip,
        )
    )
    for ctr in sorted(procs, key=lambda x: manifest.names.index(procs[x].name)):
        p = procs[ctr]
        role = ctr[len(prefix) :] if ctr.startswith(prefix) else ctr
        dflt = lab_defaults.get(role)
        r = p.resources
        cpus = r.cpu_limit_cores if (r and cpu_limits) else None
        specs.append(
            lab_spec.ContainerSpec(
                ctr,
                str(p.attributes.get("image") or images.get(ctr)),
                tuple(str(x) for x in p.attributes.get("command", [])),
                role,
                host,
                netns_of=owner,
                cpus=cpus,
                mem_bytes=r.memory_limit_bytes if r else None,
                config_files=tuple(
                    path for files in cfg.values() for c2, path, _ in files if c2 == ctr
                )
                or (dflt.config_files if dflt else ()),
                introspect=dflt.introspect if dflt else None,
                environment=dflt.environment if dflt else (),
                extra_labels=dflt.extra_labels if dflt else (),
            )
        )
    return Replacement(
        tuple(specs),
        process_container={p.name: ctr for ctr, p in procs.items()},
        checkpoint={p.name: p.data[0] for p in procs.values() if p.data},
        fs_archive=fs_archive,
        fs_container=fs_container,
        config_files={k: tuple(v) for k, v in cfg.items()},
    )
