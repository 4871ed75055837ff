"""The failover benchmark's pure parts: per-method summaries and the issue's targets."""

from __future__ import annotations

from persona.recovery.bench import judge_targets, summarise


def _sample(ttr: float | None, ready: float, detect: float = 0.9, load: float = 1.5) -> dict:
    ph = {"detect_s": detect, "retrieve_s": 0.1, "provision_s": 0.3, "apply_s": ready - 1.3,
          "validate_s": 6.0}
    return {"ttr_s": ttr, "ready_s": ready, "validated": ttr is not None, "warm": False,
            "phases": ph, "loadavg": [load, 1.0, 1.0]}


def test_summaries_carry_medians_and_the_load_of_each_sample() -> None:
    s = summarise([_sample(20.0, 14.0, load=2.0), _sample(22.0, 16.0), _sample(24.0, 18.0)])
    assert s["ttr_median_s"] == 22.0 and s["ready_median_s"] == 16.0
    assert s["loadavg_1m"] == [2.0, 1.5, 1.5]
    assert s["phase_median_s"]["apply_s"] == 14.7


def test_targets_ratio_of_cold_to_every_warm_method() -> None:
    cold = summarise([_sample(21.0, 15.0)] * 3)
    cp = summarise([_sample(8.4, 2.1)] * 3)
    pol = summarise([_sample(8.0, 2.0)] * 3)
    t = judge_targets({"cold-start": cold, "critical-path": cp, "policy": pol,
                       "captured-order": summarise([_sample(8.5, 2.2)] * 3)})
    assert t["cold_over_warm_ttr_median_s"] == 2.5 and t["warm_2x_faster"] is True
    assert t["cold_over_method_ttr"]["policy"] == 2.625
    assert t["policy_no_slower"] is True and t["detect_le_3s"] is True


def test_a_cold_start_that_never_validates_meets_no_ratio() -> None:
    cold = summarise([_sample(None, 1.6)] * 3)
    t = judge_targets({"cold-start": cold, "critical-path": summarise([_sample(8.4, 2.1)])})
    assert t["cold_over_warm_ttr_median_s"] is None and t["warm_2x_faster"] is False
    assert t["cold_over_method_ttr"] == {}
