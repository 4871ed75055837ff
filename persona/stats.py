"""Statistics shared by evaluation, experiments and the validation suite (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats as st


def _statistic(name: str) -> Callable[..., Any]:
    """``mean``, ``median`` or ``pNN`` (e.g. ``p99``) as a function ``f(values, axis=None)``."""
    if name == "mean":
        return np.mean
    if name == "median":
        return np.median
    if name.startswith("p"):
        q = float(name[1:])
        return lambda v, axis=None: np.percentile(v, q, axis=axis)
    raise ValueError(f"unknown statistic {name!r}")


def mean_ci(
    x: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, lo, hi)``; a single value gives (v, v, v)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_ci needs at least one value")
    m = float(a.mean())
    if a.size == 1 or float(a.std()) == 0.0:
        return m, m, m
    half = (
        float(st.t.ppf(0.5 + confidence / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    )
    return m, m - half, m + half


def bootstrap_ci(
    x: Sequence[float] | np.ndarray,
    statistic: str = "mean",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of a statistic (``mean``, ``median`` or ``pNN``)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")

    f = _statistic(statistic)

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    samples = f(a[idx], axis=1)
    alpha = (1 - confidence) / 2
    return float(f(a)), float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def paired_ratio_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Ratio of means ``mean(x) / mean(y)`` on paired samples (common random numbers), bootstrap CI."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_ratio_ci needs two non-empty samples of equal length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(2000, a.size))
    ratios = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return (
        float(a.mean() / b.mean()),
        float(np.quantile(ratios, alpha)),
        float(np.quantile(ratios, 1 - alpha)),
    )


def iqr_filter(x: Sequence[float] | np.ndarray, k: float = 3.0) -> np.ndarray:
    """Values within ``[Q1 - k*IQR, Q3 + k*IQR]`` (Kayenta-style outlier removal)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return a
    q1, q3 = np.percentile(a, [25, 75])
    iqr = q3 - q1
    return a[(a >= q1 - k * iqr) & (a <= q3 + k * iqr)]


def hodges_lehmann(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    max_pairs: int = 250_000,
    seed: int = 0,
) -> float:
    """Hodges-Lehmann shift ``median(x_i - y_j)`` (x relative to y); pairs subsampled if many."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("hodges_lehmann needs two non-empty samples")
    if a.size * b.size <= max_pairs:
        return float(np.median(np.subtract.outer(a, b)))
    rng = np.random.default_rng(seed)
    return float(np.median(rng.choice(a, max_pairs) - rng.choice(b, max_pairs)))


def ratio_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    statistic: str = "mean",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``stat(x) / stat(y)`` on independent samples with a percentile bootstrap CI.

    ``statistic``: ``mean``, ``median`` or ``pNN`` (e.g. ``p99``).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("ratio_ci needs two non-empty samples")

    f = _statistic(statistic)

    rng = np.random.default_rng(seed)
    ra = f(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    rb = f(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ra / rb
    ratios = ratios[np.isfinite(ratios)]
    point = float(f(a)) / float(f(b)) if float(f(b)) != 0 else math.inf
    if ratios.size == 0:
        return point, math.nan, math.nan
    alpha = (1 - confidence) / 2
    return point, float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))
