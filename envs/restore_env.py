"""``persona/Restore-v0``: learn in which order, and with which CPU allocations, to restore a
host persona onto a replacement host.

Description
    Each episode restores one persona (a DAG of components: filesystems, kernel modules,
    configs, processes, network state) onto a replacement host with ``slots`` parallel
    restore slots, shared CPU cores and shared I/O bandwidth, then validates it. The agent
    decides which ready component to start next and at which allocation level; waiting is
    also an action. Hidden soft dependencies between processes make some orders fail and
    retry; allocations below a process's true demand fail performance validation;
    allocations above the host's cores starve each other. See :mod:`envs.sim.core` for the
    dynamics, which are the one copy used everywhere.

Action Space
    ``Discrete(max_components * levels + 1)``: action ``i * levels + l`` starts component
    ``i`` (captured order) at allocation level ``l``; the last action waits for the next
    event. :meth:`RestoreEnv.action_masks` gives the valid actions (for MaskablePPO). An
    invalid action does not crash: the restorer idles ``invalid_action_s`` and
    ``info["valid_action"]`` is ``False``.

Observation Space
    ``Dict`` of padded arrays (``N = max_components``), float32, all finite and >= 0:

    ============  ==============  ==================================================
    key           shape           meaning
    ============  ==============  ==================================================
    nodes         (N, F)          per-component features, see ``envs.layout``
    adjacency     (N, N)          ``[i, j] = 1``: i hard-depends on j
    node_mask     (N,)            1 for real components, 0 for padding
    globals       (G,)            host and progress features, see ``envs.layout``
    ============  ==============  ==================================================

Rewards
    ``-reward_scale`` per simulated second that passes in a step (starting a restore while
    slots are free costs nothing; time passes when the agent waits or the simulator must
    wait). An episode that is not validated is charged up to ``max_time_s``. So the
    undiscounted return is exactly ``-reward_scale * TTR``.

Episode End
    Terminated when validation finishes (passed or given up after the last remediation
    round); truncated when simulated time reaches ``max_time_s``. The final ``info`` has
    ``ttr``, ``validated``, ``checks`` (functional / performance / load verdicts) and
    per-component outcomes.

Arguments
    ``scenario``: a scenario URI (``generator://mixed-v0?components=5-16``,
    ``scenario://webshop``, a YAML/JSON path) or a :class:`~envs.sim.params.Scenario`.
    ``backend``: ``"sim"`` or ``"live"`` (a real lab host restored with Docker + CRIU, see
    :mod:`envs.live`; then ``host`` names the lab host, ``live`` holds
    :class:`~envs.live.LiveConfig` options, and ``scenario`` is not used: the persona is
    captured from the host at every reset). ``max_components``: padding size N.
    ``config``: :class:`~envs.sim.params.SimConfig`.

Version History
    v0: initial version.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import layout
from envs.backends import RestoreBackend, SimBackend
from envs.scenarios import ScenarioSource, resolve
from envs.sim import core
from envs.sim.params import EpisodeParams, Scenario, SimConfig
from persona.errors import ScenarioError

DEFAULT_SCENARIO = "generator://mixed-v0?components=5-16"
DEFAULT_MAX_COMPONENTS = 24


class RestoreEnv(gym.Env[dict[str, Any], np.int64]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        scenario: str | Scenario | ScenarioSource = DEFAULT_SCENARIO,
        backend: str = "sim",
        max_components: int = DEFAULT_MAX_COMPONENTS,
        config: SimConfig | None = None,
        render_mode: str | None = None,
        host: str | None = None,
        live: Any = None,
    ) -> None:
        if backend not in ("sim", "live"):
            raise ScenarioError(f"backend {backend!r} is not available; use 'sim' or 'live'")
        if backend == "sim" and (host is not None or live is not None):
            raise ScenarioError("host= and live= are options of backend='live'")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ScenarioError(f"render_mode {render_mode!r} is not supported; use 'ansi' or None")
        self.source = resolve(scenario)
        if backend == "sim" and self.source.max_components > max_components:
            raise ScenarioError(
                f"scenario {self.source.name} has up to {self.source.max_components} components "
                f"but max_components={max_components}; raise max_components"
            )
        self.backend = backend
        self.config = config or SimConfig()
        self.n_max = max_components
        self.render_mode = render_mode
        L = self.config.n_levels
        F, G = len(layout.NODE_FEATURES), len(layout.GLOBAL_FEATURES)
        hi = layout.OBS_HIGH
        self.observation_space = spaces.Dict(
            {
                "nodes": spaces.Box(0.0, hi, (self.n_max, F), dtype=np.float32),
                "adjacency": spaces.Box(0.0, 1.0, (self.n_max, self.n_max), dtype=np.float32),
                "node_mask": spaces.Box(0.0, 1.0, (self.n_max,), dtype=np.float32),
                "globals": spaces.Box(0.0, hi, (G,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Discrete(self.n_max * L + 1)
        self.session: RestoreBackend
        if backend == "live":
            from envs.live import LiveBackend, LiveConfig

            self.session = LiveBackend(LiveConfig.from_kwargs(host, live), self.config, self.n_max)
        else:
            self.session = SimBackend(self.source, self.config, self.n_max)
        self.params: EpisodeParams | None = None
        self.state: core.SimState | None = None
        self._static: layout.StaticObs | None = None

    # ---- gymnasium API ---------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.params, self.state, info = self.session.reset(self.np_random)
        self._static = layout.static_obs(self.params, self.n_max)
        return self._obs(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.params is None or self.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self.state.terminal:
            raise gym.error.ResetNeeded("the episode has ended; call reset()")
        self.state, elapsed_s, valid, extra = self.session.apply(int(action))
        r = -self.params.config.reward_scale * elapsed_s
        info: dict[str, Any] = {
            "t": self.state.t,
            "valid_action": valid,
            "n_failures": self.state.n_failures,
            **extra,
        }
        if self.state.terminal:
            info.update(self.episode_summary())
        terminated = self.state.terminal and not self.state.truncated
        return self._obs(), r, terminated, self.state.truncated, info

    def action_masks(self) -> np.ndarray:
        assert self.params is not None and self.state is not None, "call reset() first"
        return core.action_mask(self.params, self.state, self.n_max)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.params is None or self.state is None:
            return None
        s, p = self.state, self.params
        names = p.scenario.manifest.names
        label = {core.PENDING: "pending", core.RUNNING: "running", core.DONE: "done"}
        rows = [f"t={s.t:7.2f}s  failures={s.n_failures}"]
        for i, nm in enumerate(names):
            extra = f" level={s.level[i]}" if s.level[i] >= 0 else ""
            rows.append(f"  {nm:28s} {label[int(s.status[i])]:8s}{extra}")
        return "\n".join(rows)

    def close(self) -> None:
        """Release what the backend created (the live backend rolls back an unfinished
        episode and removes its work folder)."""
        self.session.close()
        super().close()

    # ---- helpers ---------------------------------------------------------------------
    def _obs(self) -> dict[str, np.ndarray]:
        assert self.params is not None and self.state is not None and self._static is not None
        return layout.observe(self.params, self.state, self._static)

    def episode_summary(self) -> dict[str, Any]:
        """Outcome of the finished episode, as the validation suite would report it."""
        p, s = self.params, self.state
        assert p is not None and s is not None
        checks = {
            name: {
                "verdict": "pass" if passed else "fail",
                "first_round": "pass" if first else "fail",
                "remediations": fixes,
            }
            for name, passed, first, fixes in s.checks
        }
        comps = []
        live_host = p.scenario.family == "live"
        # what the first validation round measured: the policy's own allocations
        eff = core.effective_alloc(p, s.first_alloc if s.first_alloc is not None else s.alloc)
        for i, c in enumerate(p.scenario.manifest.components):
            entry: dict[str, Any] = {
                "name": c.name,
                "kind": c.kind.value,
                "role": c.role,
                "failed_attempts": int(s.attempts[i]),
                "level": int(s.level[i]),
            }
            # a simulated demand; not for a calibrated live host (family "live"), whose live
            # backend measures no utilisation: a policy gets the same information in both
            if c.is_process and s.checks and self.backend == "sim" and not live_host:
                entry["utilisation"] = float(p.demand[i] / max(eff[i], 1e-9))
            comps.append(entry)
        return {
            "ttr": float(s.ttr),
            "validated": bool(s.validated),
            "truncated": bool(s.truncated),
            "checks": checks,
            "remediation_s": float(s.remediation_s),
            "components": comps,
        }
