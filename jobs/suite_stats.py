"""Summary statistics across the seeds of a suite: mean, sample standard deviation and the 95 %
confidence interval of the mean by Student's t (docs/suites.md).

For n finite values x_1 … x_n with mean x̄ and sample standard deviation s (divisor n − 1), the
two-sided interval at level 1 − α is

    x̄ ± t_{1−α/2, n−1} · s / √n

(the t quantile from ``scipy.stats.t``; n = 3 gives t_{0.975, 2} = 4.303). With n = 1 neither s nor the
interval exists: they are reported as null, never as zero width. Non-finite values (a diverged run's
statistic, stored as null) are left out and counted in ``missing``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
"""The level of every interval a suite report gives."""


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """t_{(1+confidence)/2, df}: the two-sided critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    from scipy.stats import t as student_t  # here: scipy.stats takes ≈1 s to import, the API starts without it

    return float(student_t.ppf((1.0 + confidence) / 2.0, df))


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and the ``confidence`` interval of the mean of ``n`` finite values."""

    n: int
    missing: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None or self.mean is None else self.ci_high - self.mean

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (closed); False when there is no interval."""
        return self.ci_low is not None and self.ci_high is not None and self.ci_low <= value <= self.ci_high

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "missing": self.missing, "mean": self.mean, "std": self.std,
                "ci95": None if self.ci_low is None else [self.ci_low, self.ci_high],
                "half_width": self.half_width, "t": self.t, "confidence": self.confidence}


def summarize(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Summary:
    """The summary of the finite ``values`` (None and non-finite ones are counted as missing)."""
    finite: list[float] = []
    missing = 0
    for v in values:
        if v is None or not math.isfinite(v):
            missing += 1
        else:
            finite.append(float(v))
    n = len(finite)
    if n == 0:
        return Summary(0, missing, None, None, None, None, None, confidence)
    mean = math.fsum(finite) / n
    if n == 1:
        return Summary(1, missing, mean, None, None, None, None, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in finite) / (n - 1))
    t = t_quantile(n - 1, confidence)
    half = t * std / math.sqrt(n)
    return Summary(n, missing, mean, std, mean - half, mean + half, t, confidence)
