"""Behavioural Validation Suite: does a replacement host behave like the healthy original?

Public API (stable; the recovery workflow calls it)::

    from persona.validate import Target, record_baseline, validate_target, Baseline, Verdict
    t = target_for_host("demo")                      # or Target(host, api_url, redis, netns_pid)
    b = record_baseline(t, seed=0, budget_s=30)      # while the original is healthy
    b.save("baseline.json"); b = Baseline.load("baseline.json")
    v = validate_target(t2, b, seed=0)               # against the replacement
    v.passed, v.score, v.metrics, v.to_dict(); v.write(out_dir)  # verdict.json, report.md, latency.png
"""

from persona.validate.model import Baseline, MetricResult, Outcome, Target, Verdict
from persona.validate.suite import (
    DEFAULT_BUDGET_S,
    record_baseline,
    target_for_host,
    validate_target,
)

__all__ = [
    "DEFAULT_BUDGET_S",
    "Baseline",
    "MetricResult",
    "Outcome",
    "Target",
    "Verdict",
    "record_baseline",
    "target_for_host",
    "validate_target",
]
