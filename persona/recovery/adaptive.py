"""The specification's Adaptive Learning Module, applied to a live host's persona metadata.

After every validation, the record of a host is updated from what the restore and the
validation showed, and persisted next to its personas, so the next restore starts better:

* configuration priority from error sources: roles whose restore steps failed are deferred;
* allocations for critical processes from utilisation: roles whose processes were starved
  (CPU throttled, utilisation > 1) get a higher allocation level, idle ones (< 0.5) a lower one;
* versions that failed to restore or validate are remembered, so "latest valid" skips them.

The update rules are exactly :class:`agents.baselines.SeedAdaptive`'s (``end_episode``):
one copy of the logic, fed with live observations instead of simulated ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.baselines import SeedAdaptive

META_NAME = "adaptive"


@dataclass(frozen=True)
class ComponentObservation:
    """One process of the replacement as the restore and validation saw it."""

    component: str
    role: str
    failed_attempts: int  # failed restore steps (and retries) of this component
    utilisation: float | None  # CPU used / allocated during validation (> 1: throttled)


@dataclass(frozen=True)
class AdaptiveRecord:
    host: str
    defer: Mapping[str, float] = field(default_factory=dict)  # role -> priority penalty
    boost: Mapping[str, int] = field(default_factory=dict)  # role -> allocation level change
    bad_versions: tuple[str, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["defer"], d["boost"] = dict(self.defer), dict(self.boost)
        d["bad_versions"], d["history"] = list(self.bad_versions), [dict(h) for h in self.history]
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None, host: str) -> AdaptiveRecord:
        if not d:
            return AdaptiveRecord(host)
        return AdaptiveRecord(
            str(d.get("host", host)),
            {str(k): float(v) for k, v in dict(d.get("defer", {})).items()},
            {str(k): int(v) for k, v in dict(d.get("boost", {})).items()},
            tuple(str(v) for v in d.get("bad_versions", [])),
            tuple(dict(h) for h in d.get("history", [])),
        )


def utilisation(
    used_cores: float, alloc_cores: float | None, throttled_frac: float
) -> float | None:
    """CPU used / allocated; a process throttled in more than half of its CFS periods wanted
    more than it got, so its utilisation is reported above 1 (1 + throttled fraction)."""
    if alloc_cores is None or alloc_cores <= 0:
        return None
    if throttled_frac > 0.5:
        return 1.0 + throttled_frac
    return used_cores / alloc_cores


def update(
    rec: AdaptiveRecord,
    version: str | None,
    observations: Sequence[ComponentObservation],
    validated: bool,
    failed_metrics: Sequence[str] = (),
    keep_history: int = 20,
) -> AdaptiveRecord:
    """The record after one restore + validation (pure)."""
    rules = SeedAdaptive(defer=dict(rec.defer), boost=dict(rec.boost))
    rules.end_episode(
        {
            "components": [
                {"role": o.role, "failed_attempts": o.failed_attempts, "utilisation": o.utilisation}
                for o in observations
            ]
        }
    )
    bad = list(rec.bad_versions)
    if version is not None and not validated and version not in bad:
        bad.append(version)
    entry = {
        "version": version,
        "validated": validated,
        "failed_metrics": list(failed_metrics),
        "observations": [asdict(o) for o in observations],
    }
    hist = (*rec.history, entry)[-keep_history:]
    return AdaptiveRecord(rec.host, dict(rules.defer), dict(rules.boost), tuple(bad), hist)
