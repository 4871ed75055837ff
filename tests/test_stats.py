"""persona.stats: intervals agree with scipy and cover what they should."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from persona.stats import bootstrap_ci, mean_ci, paired_ratio_ci, ratio_ci


def test_mean_ci_matches_scipy_t_interval():
    x = np.random.default_rng(0).normal(10, 2, size=40)
    m, lo, hi = mean_ci(x)
    ref = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert m == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx(ref)
    assert mean_ci([3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        mean_ci([])


def test_bootstrap_ci_covers_the_true_statistic_most_of_the_time():
    rng = np.random.default_rng(1)
    hits = {"mean": 0, "median": 0, "p90": 0}
    truth = {"mean": 0.0, "median": 0.0, "p90": st.norm.ppf(0.9)}
    for k in range(100):
        x = rng.normal(0, 1, size=200)
        for name in hits:
            _, lo, hi = bootstrap_ci(x, name, resamples=500, seed=k)
            hits[name] += lo <= truth[name] <= hi
    for name, h in hits.items():
        assert 85 <= h <= 100, (name, h)  # nominal 95 %


def test_ratio_intervals():
    rng = np.random.default_rng(2)
    a = rng.exponential(2.0, size=300)
    b = rng.exponential(1.0, size=300)
    r, lo, hi = ratio_ci(a, b, "mean")
    assert lo < 2.0 < hi and lo < r < hi
    r2, lo2, hi2 = paired_ratio_ci(a, a * 0.5)
    assert r2 == pytest.approx(2.0) and lo2 == pytest.approx(2.0) and hi2 == pytest.approx(2.0)


def test_unknown_statistic():
    with pytest.raises(ValueError, match="unknown statistic 'mode'"):
        bootstrap_ci([1.0, 2.0], "mode")
