"""The watch loop: probe on a fixed schedule, feed the detector, fence once when DOWN.

The clock is injected (:class:`Clock`), so the loop runs in tests on a :class:`FakeClock`
with scripted probe outcomes and in production on :class:`RealClock`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from persona.detect.health import FailureDetector, Status, Transition
from persona.detect.probes import Probe, ProbeResult
from persona.errors import PersonaError


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class FakeClock:
    """A clock that only moves when told: ``sleep`` advances it instantly."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Fencer(Protocol):
    """Kills the old host so there are never two live copies (implemented by recovery).

    ``fence`` must be idempotent and return only once the host can no longer serve; it raises
    a PersonaError if that cannot be guaranteed (recovery must then not start).
    """

    def fence(self, host: str) -> None: ...


class FenceError(PersonaError):
    """The old host could not be fenced: recovery must not start."""


@dataclass
class RecordingFencer:
    """A fencer that only records calls (tests, dry runs)."""

    calls: list[str] = field(default_factory=list)

    def fence(self, host: str) -> None:
        self.calls.append(host)


@dataclass(frozen=True)
class Detection:
    """Result of :func:`watch`: when the host was declared DOWN, why, and when it was fenced.

    ``last_ok_at``: completion time of the last successful probe before the failure.
    ``first_failed_at``: completion time of the first failed probe of the final outage.
    ``detected_at``: when the status went DOWN. ``fenced_at``: after the fencer returned.
    All times on the monitor's clock (monotonic seconds).
    """

    host: str
    down: bool
    reason: str
    started_at: float
    last_ok_at: float | None
    first_failed_at: float | None
    detected_at: float | None
    fenced_at: float | None
    probes: int
    phi_at_detection: float | None
    transitions: tuple[Transition, ...]
    last_error: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "down": self.down,
            "reason": self.reason,
            "started_at": self.started_at,
            "last_ok_at": self.last_ok_at,
            "first_failed_at": self.first_failed_at,
            "detected_at": self.detected_at,
            "fenced_at": self.fenced_at,
            "probes": self.probes,
            "phi_at_detection": self.phi_at_detection,
            "last_error": self.last_error,
            "transitions": [
                {"at": t.at, "status": t.status.value, "reason": t.reason, "phi": t.phi}
                for t in self.transitions
            ],
        }


def watch(
    host: str,
    probe: Probe,
    *,
    detector: FailureDetector | None = None,
    clock: Clock | None = None,
    fencer: Fencer | None = None,
    max_s: float | None = None,
    stop_on_down: bool = True,
) -> Detection:
    """Probe ``host`` every ``detector.probe.period_s`` until it is DOWN (or ``max_s`` passes).

    Probes run on a fixed schedule from the start (no drift: a slow probe shortens the next
    wait). Between a probe that hangs and the next, phi keeps rising; :meth:`tick` is evaluated
    after every probe so a silent host is declared DOWN by phi even while TCP probes time out.
    If ``fencer`` is given it is called exactly once, right after the DOWN transition.
    """
    det = detector or FailureDetector()
    clk: Clock = clock or RealClock()
    period = det.probe.period_s
    start = clk.now()
    nxt = start
    probes = 0
    last_ok: float | None = None
    first_fail: float | None = None
    last_err = ""
    while True:
        now = clk.now()
        if max_s is not None and now - start >= max_s:
            break
        clk.sleep(nxt - now)
        nxt += period
        res: ProbeResult = probe()
        probes += 1
        done = clk.now()
        if res.ok:
            last_ok, first_fail = done, None
        else:
            last_err = res.error
            if first_fail is None:
                first_fail = done
        status = det.observe(done, res.ok)
        if status is Status.DOWN and stop_on_down:
            tr = det.transitions[-1]
            fenced = None
            if fencer is not None:
                fencer.fence(host)
                fenced = clk.now()
            return Detection(
                host,
                True,
                tr.reason,
                start,
                last_ok,
                first_fail,
                tr.at,
                fenced,
                probes,
                tr.phi,
                tuple(det.transitions),
                last_err,
            )
        if clk.now() > nxt:  # probe overran the period: skip missed slots, keep the grid
            behind = clk.now() - nxt
            nxt += period * (int(behind / period) + 1)
    return Detection(
        host,
        det.status is Status.DOWN,
        "timeout",
        start,
        last_ok,
        first_fail,
        None,
        None,
        probes,
        None,
        tuple(det.transitions),
        last_err,
    )
