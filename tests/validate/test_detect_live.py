"""Live: the detector declares a killed demo-shaped host DOWN within 3 s and fences it once.
(Here rather than in tests/detect so it shares this folder's host fixture.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from persona.detect import FailureDetector, RecordingFencer, probe_for_target, watch
from persona.validate import target_for_host

pytestmark = pytest.mark.live


def test_killed_host_detected_within_3s(vlab: Any, live_host: Any) -> None:
    t = target_for_host(live_host.name, vlab)
    probe = probe_for_target(t.api_url)
    assert probe().ok
    fencer = RecordingFencer()
    killed_at: list[float] = []

    def kill() -> None:
        time.sleep(3.0)  # let the detector learn the heartbeat rhythm
        killed_at.append(time.monotonic())
        vlab.kill(live_host.ids["api"])

    th = threading.Thread(target=kill)
    th.start()
    d = watch(live_host.name, probe, detector=FailureDetector(), fencer=fencer, max_s=20)
    th.join()
    assert d.down and fencer.calls == [live_host.name], d.to_dict()
    assert d.detected_at is not None
    detect_s = d.detected_at - killed_at[0]
    print(f"detection {detect_s:.2f} s after kill, reason {d.reason}, probes {d.probes}")
    assert 0 < detect_s <= 3.0, d.to_dict()
