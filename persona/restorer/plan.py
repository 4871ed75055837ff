"""Turn a persona manifest into an ordered restore plan with allocations.

The plan is the learned policy's decisions when it restores the persona closed-loop on the
simulator of that persona on the target host (episode seed ``seed``: one draw of durations
and faults). In production the restorer asks the policy online at every decision point
(:meth:`~persona.restorer.policy.OnnxRestorePolicy.act`); the plan is what it expects to do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from envs.restore_env import RestoreEnv
from envs.scenarios import FixedScenario, hidden_from_roles, resolve
from envs.sim.params import HostSpec, Scenario
from persona.errors import PolicyError
from persona.model import PersonaManifest
from persona.restorer.policy import OnnxRestorePolicy


@dataclass(frozen=True)
class PlanStep:
    t: float  # simulated seconds since the restore began
    component: str
    kind: str
    role: str
    level: int  # allocation level index
    alloc: str  # "1.2x captured peak" (processes) or "1.0 restore cores" (others)
    attempt: int  # 1 for the first try; > 1 after a failed attempt


@dataclass(frozen=True)
class RestorePlan:
    persona: str
    host: HostSpec
    policy: str
    steps: tuple[PlanStep, ...]
    predicted_ttr: float
    validated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "host": asdict(self.host),
            "policy": self.policy,
            "predicted_ttr": self.predicted_ttr,
            "validated": self.validated,
            "steps": [asdict(s) for s in self.steps],
        }

    def format(self) -> str:
        rows = [
            f"restore plan for {self.persona} on {self.host.slots} slots / "
            f"{self.host.cpu_cores:g} cores (policy {self.policy})",
            f"{'t (s)':>8}  {'component':28s} {'kind':14s} {'role':8s} allocation",
        ]
        for s in self.steps:
            retry = f"  (attempt {s.attempt})" if s.attempt > 1 else ""
            rows.append(f"{s.t:8.2f}  {s.component:28s} {s.kind:14s} {s.role:8s} {s.alloc}{retry}")
        verdict = "validated" if self.validated else "NOT validated"
        rows.append(f"predicted time to recovery: {self.predicted_ttr:.1f} s ({verdict})")
        return "\n".join(rows)


def _scenario(persona: str | Path | PersonaManifest | Scenario, host: HostSpec | None) -> Scenario:
    if isinstance(persona, Scenario):
        sc = persona
    elif isinstance(persona, PersonaManifest):
        soft, mu, sd = hidden_from_roles(persona)
        sc = Scenario(
            name=persona.host.name,
            manifest=persona,
            host=host or HostSpec(),
            soft_dependencies=soft,
            demand_mu=mu,
            demand_sigma=sd,
        )
    else:
        src = resolve(str(persona))
        if not isinstance(src, FixedScenario):
            raise PolicyError(
                f"{persona} names a scenario family, not one persona; pass a manifest or file"
            )
        sc = src.scenario
    if host is not None and sc.host != host:
        sc = replace(sc, host=host)
    return sc


SEARCH = "search:"  # search:POLICY.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]]


def search_fields(policy: str) -> list[str] | None:
    """The ``@``-separated fields of a search-based restorer's spec (``POLICY.onnx``,
    ``MODEL.json``, ...), or ``None`` for any other policy name."""
    return policy[len(SEARCH) :].split("@") if policy.startswith(SEARCH) else None


def plan_restore(
    persona: str | Path | PersonaManifest | Scenario,
    policy: OnnxRestorePolicy | str | Path,
    host: HostSpec | None = None,
    seed: int = 0,
) -> RestorePlan:
    """The ordered restore plan the policy follows for ``persona`` on ``host``.

    ``policy`` may also be ``search:POLICY.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]]``, the search-based
    restorer (:func:`agents.evaluate.load_policy`): at each decision it rolls the learned
    policy out over futures drawn from a hidden structure learned from episodes (it sees the
    simulated restore's public state only). It needs the research package (``agents``),
    which is imported only then; the plain ONNX path stays onnxruntime + numpy."""
    search = isinstance(policy, str) and search_fields(policy) is not None
    pol: Any
    if search:
        from agents.evaluate import load_policy

        pol = load_policy(str(policy))
        onnx = pol.network  # the learned policy (rolled out, and alone on large personas)
        max_components, name = onnx.max_components, str(policy)
    else:
        pol = policy if isinstance(policy, OnnxRestorePolicy) else OnnxRestorePolicy(policy)
        max_components, name = pol.max_components, pol.name
    sc = _scenario(persona, host)
    if sc.n > max_components:
        raise PolicyError(
            f"persona {sc.name} has {sc.n} components; the policy handles at most {max_components}"
        )
    env = RestoreEnv(scenario=sc, max_components=max_components)
    obs, _ = env.reset(seed=seed)
    assert env.params is not None and env.state is not None
    if search:
        from agents.baselines import PolicyContext
        from agents.evaluate import true_model

        pol.begin_episode(PolicyContext(env.config, env.n_max, true_model(env)), seed)
    comps = sc.manifest.components
    L = env.config.n_levels
    wait = env.n_max * L
    steps: list[PlanStep] = []
    while True:
        state = env.state
        assert state is not None
        action = pol.act(obs, env.action_masks())
        if action != wait:
            i, lv = divmod(action, L)
            c = comps[i]
            alloc = (
                f"{env.config.alloc_levels[lv]:g}x captured peak"
                if c.is_process
                else f"{env.config.restore_cores[lv]:g} restore cores"
            )
            steps.append(
                PlanStep(
                    t=round(float(state.t), 3),
                    component=c.name,
                    kind=c.kind.value,
                    role=c.role,
                    level=int(lv),
                    alloc=alloc,
                    attempt=int(state.attempts[i]) + 1,
                )
            )
        obs, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
    return RestorePlan(
        persona=sc.name,
        host=sc.host,
        policy=name,
        steps=tuple(steps),
        predicted_ttr=float(info["ttr"]),
        validated=bool(info["validated"]),
    )
