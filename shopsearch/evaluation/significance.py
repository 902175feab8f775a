"""Is a difference between two systems real? Paired tests over per-query metric values.

Both tests pair the systems query by query, which removes the (large) variance between
queries: the question is only whether the per-query differences d_q centre away from 0.
- Paired bootstrap: resample queries with replacement, take the mean of d; the 2.5 and
  97.5 percentiles of those means are a 95% confidence interval for the mean delta.
- Paired randomisation (sign-flip) test: under H0 "the systems are exchangeable" each d_q
  is equally likely +d_q or -d_q; p = (1 + #{|mean(flipped d)| >= |mean(d)|}) / (1 + R),
  two-sided. Identical systems give d = 0, every flip ties, so p = 1 exactly and every
  delta and interval is 0.
Queries where either system's metric is undefined (NaN) are left out of that comparison.
Randomness comes from a seeded numpy Generator, so a report is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
# Resamples drawn per block: bounds memory at block x n_queries numbers.
_BLOCK = 1000


@dataclass(frozen=True)
class Comparison:
    delta: float  # mean(system) - mean(baseline) over the paired queries
    ci_low: float
    ci_high: float
    p_value: float
    n: int  # paired queries

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def compare(
    baseline: np.ndarray,
    system: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(system, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired arrays must have the same shape")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = b[keep] - a[keep]
    # Float noise (e.g. the same value computed in another order) is not a difference.
    d[np.abs(d) < 1e-12] = 0.0
    n = int(d.size)
    if n == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, 0)
    if not np.any(d):
        return Comparison(0.0, 0.0, 0.0, 1.0, n)
    rng = np.random.default_rng(seed)
    low, high = bootstrap_ci(d, resamples, rng)
    p = randomisation_p(d, resamples, rng)
    return Comparison(float(d.mean()), low, high, p, n)


def bootstrap_ci(
    d: np.ndarray, resamples: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float]:
    means = np.empty(resamples)
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        idx = rng.integers(0, d.size, size=(size, d.size))
        means[start : start + size] = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def randomisation_p(d: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    observed = abs(d.mean())
    # Compare with a relative tolerance so float noise in equal means counts as "as extreme".
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    extreme = 0
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        signs = rng.integers(0, 2, size=(size, d.size), dtype=np.int8) * 2 - 1
        flipped = np.abs((signs * d).mean(axis=1))
        extreme += int(np.sum(flipped >= observed - tol))
    return (1 + extreme) / (1 + resamples)
