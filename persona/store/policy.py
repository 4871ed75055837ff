"""Retention policy for ``prune`` (pure)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from persona.errors import StoreError


@dataclass(frozen=True, order=True)
class Version:
    """One visible version of a host: the ref ``refs/<host>/<version>-<time_ns>-<snapshot>``."""

    host: str
    version: int
    time_ns: int
    snapshot: str

    @property
    def ref_name(self) -> str:
        return f"refs/{self.host}/{self.version:010d}-{self.time_ns:020d}-{self.snapshot}"


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_within_s: float | None = None

    def __post_init__(self) -> None:
        if self.keep_last is None and self.keep_within_s is None:
            raise StoreError("prune needs a policy: --keep-last N and/or --keep-within DURATION")
        if self.keep_last is not None and self.keep_last < 1:
            raise StoreError("--keep-last must be at least 1 (the latest version is always kept)")
        if self.keep_within_s is not None and self.keep_within_s < 0:
            raise StoreError("--keep-within must not be negative")


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or combinations (``1d12h``) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    if not re.fullmatch(r"(\d+(\.\d+)?[smhdw])+", text):
        raise StoreError(f"invalid duration {text!r}: use e.g. 30m, 12h, 7d, 1d12h")
    return sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhdw])", text))


def apply_policy(
    versions: list[Version], policy: Policy, now_ns: int
) -> tuple[list[Version], list[Version]]:
    """Split versions into (keep, forget). Per host; the latest version of a host is always kept."""
    by_host: dict[str, list[Version]] = defaultdict(list)
    for v in versions:
        by_host[v.host].append(v)
    keep: list[Version] = []
    forget: list[Version] = []
    for host in sorted(by_host):
        vs = sorted(by_host[host], key=lambda v: v.version, reverse=True)
        for i, v in enumerate(vs):
            k = i == 0
            if policy.keep_last is not None and i < policy.keep_last:
                k = True
            if (
                policy.keep_within_s is not None
                and now_ns - v.time_ns <= policy.keep_within_s * 1e9
            ):
                k = True
            (keep if k else forget).append(v)
    return sorted(keep), sorted(forget)
