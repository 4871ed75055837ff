"""Failure detection: health probes, phi accrual, hysteresis and the fencing hook.

Public API (the recovery workflow calls it)::

    from persona.detect import FailureDetector, ProbeConfig, PhiConfig, watch, probe_for_target
    det = FailureDetector(ProbeConfig(period_s=0.5), PhiConfig(threshold=8))
    d = watch("demo", probe_for_target(target), detector=det, fencer=my_fencer, max_s=600)
    d.detected_at - d.last_ok_at   # detection time; my_fencer.fence("demo") was called once

``Fencer`` is a Protocol (``fence(host) -> None``); recovery implements the actual kill.
"""

from persona.detect.health import FailureDetector, HealthCheck, ProbeConfig, Status, Transition
from persona.detect.monitor import (
    Clock,
    Detection,
    FakeClock,
    FenceError,
    Fencer,
    RealClock,
    RecordingFencer,
    watch,
)
from persona.detect.phi import PhiAccrualDetector, PhiConfig, phi_value
from persona.detect.probes import AllOf, HttpProbe, Probe, ProbeResult, TcpProbe, check_address

__all__ = [
    "AllOf",
    "Clock",
    "Detection",
    "FailureDetector",
    "FakeClock",
    "FenceError",
    "Fencer",
    "HealthCheck",
    "HttpProbe",
    "PhiAccrualDetector",
    "PhiConfig",
    "Probe",
    "ProbeConfig",
    "ProbeResult",
    "RealClock",
    "RecordingFencer",
    "Status",
    "TcpProbe",
    "Transition",
    "check_address",
    "phi_value",
    "probe_for_target",
    "watch",
]


def probe_for_target(
    api_url: str, redis: tuple[str, int] | None = None, timeout_s: float = 0.4
) -> Probe:
    """The application probe of a lab host: GET ``/healthz`` (+ TCP to redis if given)."""
    http = HttpProbe(api_url.rstrip("/") + "/healthz", timeout_s)
    if redis is None:
        return http
    return AllOf((http, TcpProbe(redis[0], redis[1], timeout_s)))
