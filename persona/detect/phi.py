"""Phi-accrual failure detector (Hayashibara et al. 2004; the Akka/Cassandra variant). Pure.

``phi(t) = -log10(1 - F(t - t_last))`` where ``F`` is the normal CDF fitted to the recent
inter-arrival times of heartbeats (mean shifted by ``acceptable_pause_s``, standard deviation
floored at ``min_std_s``). ``phi = 8`` means the probability that the heartbeat is merely late is
1e-8. The tail is computed exactly with ``erfc``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class PhiConfig:
    """``threshold``: suspicion level (Akka/Cassandra default 8).
    ``window``: inter-arrival samples kept. ``min_std_s``: floor of the fitted deviation
    (a perfectly regular heartbeat would otherwise make any jitter fatal).
    ``acceptable_pause_s``: added to the mean (tolerated GC pause / probe jitter).
    ``first_interval_s``: the expected interval before two heartbeats were seen.
    """

    threshold: float = 8.0
    window: int = 100
    min_std_s: float = 0.1
    acceptable_pause_s: float = 0.25
    first_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.threshold <= 0 or self.window < 2 or self.min_std_s <= 0:
            raise ValueError("phi: threshold > 0, window >= 2 and min_std_s > 0 are required")
        if self.acceptable_pause_s < 0 or self.first_interval_s <= 0:
            raise ValueError("phi: acceptable_pause_s >= 0 and first_interval_s > 0 are required")


def phi_value(elapsed_s: float, mean_s: float, std_s: float) -> float:
    """Suspicion after ``elapsed_s`` without a heartbeat, for intervals ~ N(mean, std).

    Exact normal tail via ``erfc`` (Akka's logistic approximation overstates phi by ~12 % at
    5 sigma); capped at 300 where the tail underflows.
    """
    p_later = 0.5 * math.erfc((elapsed_s - mean_s) / (std_s * math.sqrt(2.0)))
    return -math.log10(max(p_later, 1e-300))


class PhiAccrualDetector:
    """Feed heartbeat arrival times with :meth:`heartbeat`; ask :meth:`phi` at any time."""

    def __init__(self, config: PhiConfig | None = None) -> None:
        self.config = config or PhiConfig()
        self._intervals: deque[float] = deque(maxlen=self.config.window)
        self._last: float | None = None

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    def heartbeat(self, now: float) -> None:
        if self._last is not None:
            if now < self._last:
                raise ValueError(f"heartbeat at {now} is before the previous one at {self._last}")
            self._intervals.append(now - self._last)
        self._last = now

    def stats(self) -> tuple[float, float]:
        """Fitted (mean, std) of the inter-arrival times, before the pause shift."""
        c = self.config
        if not self._intervals:
            return c.first_interval_s, max(c.first_interval_s / 4, c.min_std_s)
        n = len(self._intervals)
        mean = sum(self._intervals) / n
        var = sum((x - mean) ** 2 for x in self._intervals) / n
        return mean, max(math.sqrt(var), c.min_std_s)

    def phi(self, now: float) -> float:
        """0 before the first heartbeat (nothing to suspect yet)."""
        if self._last is None:
            return 0.0
        mean, std = self.stats()
        return phi_value(now - self._last, mean + self.config.acceptable_pause_s, std)

    def suspect(self, now: float) -> bool:
        return self.phi(now) >= self.config.threshold

    def time_to_suspect(self) -> float:
        """Seconds after the last heartbeat at which phi reaches the threshold (bisection)."""
        mean, std = self.stats()
        mean += self.config.acceptable_pause_s
        lo, hi = 0.0, mean + 100 * std
        for _ in range(60):
            mid = (lo + hi) / 2
            if phi_value(mid, mean, std) >= self.config.threshold:
                hi = mid
            else:
                lo = mid
        return hi
