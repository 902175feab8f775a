"""Is a difference between two systems real? A paired test over per-query metric values.

The systems are paired query by query, which removes the (large) variance between queries:
the question is only whether the per-query differences d_q centre away from 0.
- p: a paired randomisation (sign-flip) test. Under H0 "the systems are exchangeable" each
  d_q is equally likely +d_q or -d_q; with R random sign vectors s_r,
  p = (1 + #{r: |mean(s_r d)| >= |mean(d)|}) / (1 + R), two-sided.
- The 95% CI is that same test inverted: every shift delta the test does not reject at 5%
  when run on d - delta with the same R sign vectors, i.e. {delta : p(delta) >= 0.05}.
  Hence "the CI excludes 0" and "p < 0.05" are one statement by construction, where a
  bootstrap percentile CI beside a randomisation p can disagree near the boundary and read
  as a contradiction.
  Computing it needs no search: mean(s_r (d - delta)) = a_r - delta b_r with
  a_r = mean(s_r d) and b_r = mean(s_r), so |a_r - delta b_r| >= |mean(d) - delta| is a
  quadratic inequality in delta whose solutions form an interval [lo_r, hi_r] that holds
  mean(d). p(delta) counts the intervals that hold delta, so it falls monotonically away
  from mean(d) on either side; the CI's ends are the t-th smallest lo_r and the t-th largest
  hi_r, t = ceil(0.05 (1 + R) - 1), and p(0) counts the same intervals at 0.
- Identical systems give d = 0: p = 1 exactly and every delta and interval is 0.
- With very few queries the test cannot reject any shift: of the 2^n sign vectors, the
  two that flip all deltas alike are as extreme at every shift, and once they are 5% of
  the draws or more (2 / 2^n: n <= 4 surely, n = 5 by chance) the CI is unbounded,
  (-inf, +inf) (null in --json). That is the honest answer for four queries, not a
  failure.
Queries where either system's metric is undefined (NaN) are left out of that comparison.
Randomness comes from a seeded numpy Generator, so a report is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
CONFIDENCE = 0.95  # the CI's level; p < 1 - CONFIDENCE is "significant", the same cut
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

    def ci_text(self, digits: int = 3) -> str:
        """The CI as "[-0.012, +0.034]"; an unbounded end (too few queries) as -inf / +inf."""
        return f"[{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"

    @property
    def significant(self) -> bool:
        """p < 0.05, which is the same as the 95% CI excluding 0 (see the module's doc)."""
        return self.p_value < 1 - CONFIDENCE


def compare(
    baseline: np.ndarray,
    system: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = CONFIDENCE,
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
    lo, hi = acceptance_intervals(d, resamples, rng)
    p = (1 + count_holding(lo, hi, 0.0)) / (1 + resamples)
    low, high = inverted_ci(lo, hi, resamples, level)
    return Comparison(float(d.mean()), low, high, p, n)


def acceptance_intervals(
    d: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each of `resamples` random sign vectors s_r, the interval [lo_r, hi_r] of shifts
    delta at which the flipped mean is at least as extreme as the observed one:
    |a_r - delta b_r| >= |m - delta|, a_r = mean(s_r d), b_r = mean(s_r), m = mean(d).
    As (b_r^2 - 1) delta^2 - 2 (a_r b_r - m) delta + (a_r^2 - m^2) >= 0 opens downwards
    (|b_r| <= 1) and holds at delta = m, its solutions are the interval between its roots,
    or every delta when |b_r| = 1 (all signs alike)."""
    m = float(d.mean())
    # Float noise in equal means counts as "as extreme", as it would in exact arithmetic.
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    los, his = [], []
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        signs = (rng.integers(0, 2, size=(size, d.size), dtype=np.int8) * 2 - 1).astype(float)
        a_r = signs @ d / d.size
        b_r = signs.sum(axis=1) / d.size
        quad = b_r**2 - 1.0
        lin = -2.0 * (a_r * b_r - m)
        const = a_r**2 - m**2
        flat = quad > -1e-15
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(lin**2 - 4.0 * quad * const, 0.0))
            r1 = (-lin + root) / (2.0 * quad)
            r2 = (-lin - root) / (2.0 * quad)
        lo = np.where(flat, -np.inf, np.minimum(r1, r2))
        hi = np.where(flat, np.inf, np.maximum(r1, r2))
        # Each interval holds m; rounding may not: keep it, so p(delta) is monotone.
        los.append(np.minimum(lo, m) - tol)
        his.append(np.maximum(hi, m) + tol)
    return np.concatenate(los), np.concatenate(his)


def count_holding(lo: np.ndarray, hi: np.ndarray, delta: float) -> int:
    """Sign vectors whose flipped mean is as extreme as the observed one at shift `delta`."""
    return int(np.sum((lo <= delta) & (delta <= hi)))


def inverted_ci(
    lo: np.ndarray, hi: np.ndarray, resamples: int, level: float = CONFIDENCE
) -> tuple[float, float]:
    """The shifts the test does not reject at 1 - `level`: p(delta) >= 1 - level, i.e. at
    least t = ceil((1 - level)(1 + R) - 1) intervals hold delta. Every interval holds the
    observed mean, so on its left that is the t-th smallest lo, on its right the t-th
    largest hi."""
    t = max(1, math.ceil((1 - level) * (1 + resamples) - 1 - 1e-9))
    t = min(t, lo.size)
    return float(np.sort(lo)[t - 1]), float(np.sort(hi)[::-1][t - 1])
