"""The Behavioural Validation Suite: record a baseline from a healthy host, validate a replacement.

Shell around pure parts: :mod:`corpus` (requests + noise filter), :mod:`load` (asyncio load
generators), :mod:`conntable` (connection table), :mod:`judge` (statistics -> per-metric
outcomes -> verdict).
"""

from __future__ import annotations

from typing import Any

from persona.validate.model import Baseline, Target, Verdict

DEFAULT_BUDGET_S = 30.0


def record_baseline(
    target: Target, *, seed: int = 0, budget_s: float = DEFAULT_BUDGET_S, **overrides: Any
) -> Baseline:
    """Record the healthy host's behaviour within ``budget_s`` seconds (seeded)."""
    raise NotImplementedError


def validate_target(
    target: Target, baseline: Baseline, *, seed: int = 0, budget_s: float | None = None
) -> Verdict:
    """Replay the baseline's load against ``target`` and judge every metric."""
    raise NotImplementedError


def target_for_host(host: str, client: Any | None = None) -> Target:
    """The :class:`Target` of a lab host (its pause container's IP, api :8080, redis :6379)."""
    raise NotImplementedError
