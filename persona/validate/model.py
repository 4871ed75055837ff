"""Plain data of the validation suite: the target, the baseline and the verdict.

Everything here is a frozen dataclass with a JSON round trip; no I/O except ``save``/``load``
and ``Verdict.write`` (which delegates to :mod:`persona.validate.report`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from persona.capture.parse import TcpSocket
from persona.errors import ValidationError

BASELINE_FORMAT = "persona.validate.baseline/1"
VERDICT_FORMAT = "persona.validate.verdict/1"


@dataclass(frozen=True)
class Target:
    """Where a host's service can be reached: only lab addresses or loopback are accepted.

    ``host``: the persona host name (label ``persona.host``).
    ``api_url``: base URL of its HTTP API, e.g. ``http://10.77.0.10:8080``.
    ``redis``: ``(ip, port)`` of its redis if reachable from here (None: not validated).
    ``netns_pid``: a pid inside the host's network namespace (reads its connection table).
    ``corpus_items``: how many item keys the functional corpus may draw from.
    ``sockets``: for a host whose sockets are not in a namespace of this machine (a VM guest):
    reads its TCP table (``/proc/net/tcp{,6}`` rows) another way, e.g. through the guest's
    agent; used instead of ``netns_pid``. Not serialised.
    """

    host: str
    api_url: str
    redis: tuple[str, int] | None = None
    netns_pid: int | None = None
    corpus_items: int = 2000
    sockets: Callable[[], Sequence[TcpSocket]] | None = field(
        default=None, compare=False, repr=False
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "api_url": self.api_url,
            "redis": list(self.redis) if self.redis else None,
            "netns_pid": self.netns_pid,
            "corpus_items": self.corpus_items,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Target:
        r = d.get("redis")
        return Target(
            host=str(d["host"]),
            api_url=str(d["api_url"]),
            redis=(str(r[0]), int(r[1])) if r else None,
            netns_pid=d.get("netns_pid"),
            corpus_items=int(d.get("corpus_items", 2000)),
        )


class Outcome(StrEnum):
    """Per-metric classification (Kayenta's Pass/High/Low/NoData, plus Inconclusive)."""

    PASS = "Pass"
    HIGH = "High"  # candidate significantly above baseline beyond tolerance
    LOW = "Low"  # candidate significantly below baseline beyond tolerance
    NODATA = "NoData"  # not enough samples on one side to judge
    INCONCLUSIVE = "Inconclusive"  # tests disagree or CI straddles the tolerance


@dataclass(frozen=True)
class MetricResult:
    """One judged metric: outcome, whether it is critical, its weight and evidence."""

    name: str
    outcome: Outcome
    critical: bool
    weight: float
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    direction: str = "either"  # "increase": only High is bad; "decrease": only Low is bad

    @property
    def passed(self) -> bool:
        if self.outcome is Outcome.PASS:
            return True
        if self.outcome is Outcome.LOW:
            return self.direction == "increase"
        if self.outcome is Outcome.HIGH:
            return self.direction == "decrease"
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "passed": self.passed,
            "critical": self.critical,
            "weight": self.weight,
            "direction": self.direction,
            "summary": self.summary,
            "evidence": self.evidence,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MetricResult:
        return MetricResult(
            str(d["name"]),
            Outcome(d["outcome"]),
            bool(d["critical"]),
            float(d["weight"]),
            str(d["summary"]),
            dict(d.get("evidence", {})),
            str(d.get("direction", "either")),
        )


@dataclass(frozen=True)
class Baseline:
    """What the healthy original looked like (recorded by :func:`record_baseline`).

    ``corpus``: the functional requests (method, path) replayed.
    ``responses_a``/``responses_b``: two replays of the corpus (status + flattened JSON fields),
    the pair from which the noise filter is learned.
    ``latency_ms``: open-loop latency samples (from intended send times) at ``rate_hz``.
    ``throughput_rps``: closed-loop throughput at ``concurrency`` over repeated windows.
    ``ramp``: per step ``{"rate_hz", "sent", "errors", "p99_ms"}``.
    ``connections``: the connection table, normalised (see :mod:`persona.validate.conntable`).
    ``settings``: the knobs used, so validation replays exactly the same load.
    """

    host: str
    recorded_at: float
    seed: int
    settings: dict[str, Any]
    corpus: list[dict[str, str]]
    responses_a: list[dict[str, Any]]
    responses_b: list[dict[str, Any]]
    latency_ms: list[float]
    throughput_rps: list[float]
    ramp: list[dict[str, float]]
    connections: dict[str, Any] | None
    redis_ops: dict[str, list[float]] | None = None
    format: str = BASELINE_FORMAT
    # wall-clock start of the two corpus replays (None in baselines recorded before this field)
    replay_times: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        tmp.replace(p)
        return p

    @staticmethod
    def load(path: str | Path) -> Baseline:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise ValidationError(
                f"baseline {p} does not exist; record one with: "
                "persona validate --host NAME --record FILE"
            ) from e
        except (OSError, ValueError) as e:
            raise ValidationError(f"baseline {p} is unreadable ({e}); record it again") from e
        if not isinstance(d, dict) or d.get("format") != BASELINE_FORMAT:
            raise ValidationError(f"{p} is not a baseline (format {BASELINE_FORMAT} expected)")
        try:
            return Baseline(**d)
        except TypeError as e:
            raise ValidationError(
                f"baseline {p} has unexpected fields ({e}); record it again"
            ) from e


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating a replacement against a baseline.

    ``passed``: no critical metric failed and ``score >= pass_score``.
    ``score``: weighted share (0-100) of metrics that passed (NoData counts as not passed).
    """

    host: str
    passed: bool
    score: float
    pass_score: float
    metrics: list[MetricResult]
    duration_s: float
    seed: int
    samples: dict[str, list[float]] = field(default_factory=dict)  # for the latency plot
    format: str = VERDICT_FORMAT

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def failed_metrics(self) -> list[str]:
        return [m.name for m in self.metrics if not m.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "host": self.host,
            "passed": self.passed,
            "score": self.score,
            "pass_score": self.pass_score,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "failed": self.failed_metrics,
            "metrics": [m.to_dict() for m in self.metrics],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Verdict:
        return Verdict(
            host=str(d["host"]),
            passed=bool(d["passed"]),
            score=float(d["score"]),
            pass_score=float(d["pass_score"]),
            metrics=[MetricResult.from_dict(m) for m in d["metrics"]],
            duration_s=float(d["duration_s"]),
            seed=int(d["seed"]),
        )

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``verdict.json``, ``report.md`` and ``latency.png`` into ``out_dir``."""
        from persona.validate.report import write_verdict

        return write_verdict(self, Path(out_dir))
