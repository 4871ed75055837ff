"""Pure tests of the detector on synthetic heartbeat sequences with a fake clock (no daemon)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from persona.detect import (
    FailureDetector,
    FakeClock,
    HttpProbe,
    PhiAccrualDetector,
    PhiConfig,
    ProbeConfig,
    ProbeResult,
    RecordingFencer,
    Status,
    TcpProbe,
    check_address,
    phi_value,
    watch,
)
from persona.errors import ConfigError


def test_phi_matches_normal_tail() -> None:
    from scipy.stats import norm

    for elapsed in (0.6, 0.8, 1.0, 1.1, 1.3):
        exact = -math.log10(norm.sf(elapsed, loc=0.5, scale=0.1))
        assert phi_value(elapsed, 0.5, 0.1) == pytest.approx(exact, rel=1e-6)


def test_phi_is_monotone_in_elapsed_time() -> None:
    xs = np.linspace(0, 3, 300)
    ph = [phi_value(float(x), 0.5, 0.1) for x in xs]
    assert all(b >= a for a, b in itertools.pairwise(ph))
    assert ph[0] < 0.01 and ph[-1] > 8


def test_regular_heartbeats_never_suspected_and_silence_is() -> None:
    d = PhiAccrualDetector(PhiConfig(threshold=8, acceptable_pause_s=0.0))
    rng = np.random.default_rng(1)
    t = 0.0
    for _ in range(200):
        t += 0.5 + float(rng.normal(0, 0.02))
        d.heartbeat(t)
        assert not d.suspect(t + 0.5)
    tts = d.time_to_suspect()
    assert not d.suspect(t + tts - 0.01)
    assert d.suspect(t + tts + 0.01)
    # regular 0.5 s heartbeats, min std 0.1: suspicion well under 3 s
    assert 0.6 < tts < 1.5


def test_jittery_history_tolerates_longer_gaps() -> None:
    calm, noisy = PhiAccrualDetector(), PhiAccrualDetector()
    rng = np.random.default_rng(2)
    tc = tn = 0.0
    for _ in range(100):
        tc += 0.5
        tn += float(rng.uniform(0.1, 1.2))
        calm.heartbeat(tc)
        noisy.heartbeat(tn)
    assert noisy.time_to_suspect() > calm.time_to_suspect()


def test_heartbeat_going_back_in_time_is_refused() -> None:
    d = PhiAccrualDetector()
    d.heartbeat(5.0)
    with pytest.raises(ValueError):
        d.heartbeat(4.0)


def test_threshold_is_configurable() -> None:
    lo = PhiAccrualDetector(PhiConfig(threshold=2))
    hi = PhiAccrualDetector(PhiConfig(threshold=12))
    for t in np.arange(0, 20, 0.5):
        lo.heartbeat(float(t))
        hi.heartbeat(float(t))
    assert lo.time_to_suspect() < hi.time_to_suspect()


@dataclass
class Script:
    """A probe that replays outcomes, each taking ``latency`` on the fake clock."""

    clock: FakeClock
    outcomes: list[bool]
    latency: float = 0.01
    i: int = 0

    def __call__(self) -> ProbeResult:
        ok = self.outcomes[self.i] if self.i < len(self.outcomes) else self.outcomes[-1]
        self.i += 1
        self.clock.advance(self.latency if ok else 0.4)  # failures time out
        return ProbeResult(ok, self.latency, "" if ok else "timeout")


def test_watch_detects_within_three_seconds_and_fences_once() -> None:
    clk = FakeClock(100.0)
    probe = Script(clk, [True] * 20 + [False] * 50)
    fencer = RecordingFencer()
    d = watch("h", probe, clock=clk, fencer=fencer, max_s=60)
    assert d.down and fencer.calls == ["h"]
    assert d.last_ok_at is not None and d.detected_at is not None
    detect_s = d.detected_at - d.last_ok_at
    assert detect_s <= 3.0
    assert detect_s >= ProbeConfig().period_s  # at least one failed probe was needed
    assert d.fenced_at is not None and d.fenced_at >= d.detected_at


def test_watch_hanging_probes_trigger_phi_before_health_threshold() -> None:
    clk = FakeClock()
    det = FailureDetector(ProbeConfig(period_s=0.5, timeout_s=0.5, failure_threshold=10))
    probe = Script(clk, [True] * 40 + [False] * 40)
    d = watch("h", probe, detector=det, clock=clk, max_s=60)
    assert d.down and d.reason == "phi"
    assert d.phi_at_detection is not None and d.phi_at_detection >= 8


def test_watch_healthy_host_is_never_declared_down() -> None:
    clk = FakeClock()
    fencer = RecordingFencer()
    d = watch("h", Script(clk, [True]), clock=clk, fencer=fencer, max_s=120)
    assert not d.down and d.reason == "timeout" and fencer.calls == []
    assert d.probes == pytest.approx(120 / 0.5, abs=2)


def test_single_failures_do_not_flap_and_recovery_needs_consecutive_successes() -> None:
    det = FailureDetector(ProbeConfig(period_s=0.5, failure_threshold=3, success_threshold=2))
    t = 0.0
    seq = [True, True] + [True, False] * 10  # isolated failures: never DOWN
    for i, ok in enumerate(seq):
        t += 0.5
        det.observe(t, ok)
        assert det.status is (Status.UNKNOWN if i == 0 else Status.UP)
    for _ in range(3):
        t += 0.5
        det.observe(t, False)
    assert det.status is Status.DOWN
    t += 0.5
    det.observe(t, True)
    assert det.status is Status.DOWN  # one success is not enough (hysteresis)
    t += 0.5
    det.observe(t, False)
    t += 0.5
    det.observe(t, True)
    assert det.status is Status.DOWN  # the success streak was broken
    t += 0.5
    det.observe(t, True)
    assert det.status is Status.UP
    assert [tr.status for tr in det.transitions] == [Status.UP, Status.DOWN, Status.UP]


def test_probe_config_validation() -> None:
    with pytest.raises(ValueError):
        ProbeConfig(period_s=0.5, timeout_s=1.0)
    with pytest.raises(ValueError):
        ProbeConfig(failure_threshold=0)
    assert ProbeConfig().worst_case_detect_s() <= 3.0


def test_probes_refuse_addresses_outside_the_lab() -> None:
    assert check_address("10.77.0.10") == "10.77.0.10"
    assert check_address("127.0.0.1") == "127.0.0.1"
    for bad in ("8.8.8.8", "10.78.0.1", "example.com"):
        with pytest.raises(ConfigError):
            check_address(bad)
    with pytest.raises(ConfigError):
        TcpProbe("1.1.1.1", 80)
    with pytest.raises(ConfigError):
        HttpProbe("http://192.168.1.1/")


def test_tcp_probe_against_loopback_listener_and_closed_port() -> None:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    assert TcpProbe("127.0.0.1", port, 0.4)().ok
    srv.close()
    r = TcpProbe("127.0.0.1", port, 0.4)()
    assert not r.ok and "Refused" in r.error
