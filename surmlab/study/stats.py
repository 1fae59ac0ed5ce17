"""Statistics over seeds: mean, standard deviation, a t interval, and paired comparisons.

A study trains every method at every budget with the same seeds, and a seed fixes the data order and
the head's initialisation for every method alike. So two methods at one budget are compared *paired*
by seed: the differences per seed, their mean, a 95% t interval and the paired t-test's p-value
(``scipy.stats.ttest_rel``). A difference whose interval contains zero is not distinguishable from
noise at that number of seeds, and the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` seeds with its standard deviation and a two-sided t interval."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.half_width:.3f}" if self.n > 1 else f"{self.mean:.3f}"


def estimate(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean, sample standard deviation and the ``level`` t interval of ``values`` (one value: no width)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values to estimate from")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, math.nan, mean, mean, 1)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return Estimate(mean, std, mean - half, mean + half, int(x.size))


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both have: the mean difference, its interval, and the p-value."""

    difference: Estimate
    p_value: float

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes zero (with one seed nothing is)."""
        d = self.difference
        return d.n > 1 and (d.low > 0 or d.high < 0)


def paired(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Paired:
    """Compare ``a`` and ``b`` (seed -> value) on their common seeds."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two sides share no seed")
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    diff = estimate(x - y, level)
    if len(seeds) < 2:
        p = math.nan
    elif np.allclose(x - y, (x - y)[0]):  # constant differences: the t statistic is undefined
        p = 1.0 if np.isclose((x - y)[0], 0.0) else 0.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    return Paired(diff, p)
