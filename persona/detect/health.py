"""Kubernetes-style health checks (period, timeout, failure/success thresholds) and the combined
detector with hysteresis. Pure: every method takes ``now`` from the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from persona.detect.phi import PhiAccrualDetector, PhiConfig


@dataclass(frozen=True)
class ProbeConfig:
    """``period_s`` between probes, ``timeout_s`` per probe (must fit in the period),
    ``failure_threshold`` consecutive failures to declare DOWN, ``success_threshold``
    consecutive successes to declare UP again (the hysteresis).

    Defaults target <= 3 s detection on the lab (k8s defaults 10 s/1 s/3 detect in ~30 s).
    """

    period_s: float = 0.5
    timeout_s: float = 0.4
    failure_threshold: int = 3
    success_threshold: int = 2

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.timeout_s <= 0:
            raise ValueError("probe period_s and timeout_s must be > 0")
        if self.timeout_s > self.period_s:
            raise ValueError(f"probe timeout_s {self.timeout_s} exceeds period_s {self.period_s}")
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("probe failure_threshold and success_threshold must be >= 1")

    def worst_case_detect_s(self) -> float:
        """Failure right after a successful probe: threshold probes, the last one timing out."""
        return self.failure_threshold * self.period_s + self.timeout_s


class Status(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass
class HealthCheck:
    """Consecutive-count state machine of one probe (UNKNOWN until a threshold is reached)."""

    config: ProbeConfig = field(default_factory=ProbeConfig)
    status: Status = Status.UNKNOWN
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool) -> Status:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.status is not Status.UP and self.successes >= self.config.success_threshold:
                self.status = Status.UP
        else:
            self.failures += 1
            self.successes = 0
            if self.status is not Status.DOWN and self.failures >= self.config.failure_threshold:
                self.status = Status.DOWN
        return self.status


@dataclass(frozen=True)
class Transition:
    at: float
    status: Status
    reason: str  # "health" | "phi" | "recovered"
    phi: float


class FailureDetector:
    """Health check + phi accrual, with hysteresis.

    DOWN as soon as the health check reaches ``failure_threshold`` consecutive failures or phi
    reaches its threshold (whichever first). UP again only after ``success_threshold``
    consecutive successes *and* phi below ``recover_phi`` (half the threshold by default), so a
    single lucky probe does not flap the status. Successful probes are the heartbeats.
    """

    def __init__(
        self,
        probe: ProbeConfig | None = None,
        phi: PhiConfig | None = None,
        recover_phi: float | None = None,
    ) -> None:
        self.probe = probe or ProbeConfig()
        phi_cfg = phi or PhiConfig(first_interval_s=self.probe.period_s)
        self.phi = PhiAccrualDetector(phi_cfg)
        self.health = HealthCheck(self.probe)
        self.recover_phi = recover_phi if recover_phi is not None else phi_cfg.threshold / 2
        self.status = Status.UNKNOWN
        self.transitions: list[Transition] = []

    def observe(self, now: float, ok: bool) -> Status:
        """Record one probe outcome completed at ``now``; returns the (new) status."""
        if ok:
            self.phi.heartbeat(now)
        hs = self.health.observe(ok)
        return self._update(now, hs)

    def tick(self, now: float) -> Status:
        """Re-evaluate phi without a probe result (e.g. a probe still in flight)."""
        return self._update(now, self.health.status)

    def _update(self, now: float, hs: Status) -> Status:
        p = self.phi.phi(now)
        if self.status is not Status.DOWN:
            if hs is Status.DOWN:
                self._go(now, Status.DOWN, "health", p)
            elif self.phi.last_heartbeat is not None and p >= self.phi.config.threshold:
                self._go(now, Status.DOWN, "phi", p)
            elif self.status is Status.UNKNOWN and hs is Status.UP:
                self._go(now, Status.UP, "health", p)
        elif (
            hs is Status.UP
            and self.health.successes >= self.probe.success_threshold
            and p < self.recover_phi
        ):
            self._go(now, Status.UP, "recovered", p)
        return self.status

    def _go(self, now: float, status: Status, reason: str, p: float) -> None:
        self.status = status
        if status is Status.DOWN:  # recovery needs fresh consecutive successes
            self.health.status, self.health.successes = Status.DOWN, 0
        self.transitions.append(Transition(now, status, reason, p))
