"""How well one ranking of architectures predicts another: Kendall's tau, Spearman's rho with
bootstrap confidence intervals over the architectures, and the overlap of the top k.

Lower is better on both sides (RFID, KID, loss, FID), so a perfect proxy has tau = rho = 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel
from scipy import stats

MIN_ARCHS = 3  # fewer points carry no ranking information


class Estimate(BaseModel):
    """A statistic with its bootstrap percentile interval."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        if self.value is None:
            return "-"
        if self.low is None or self.high is None:
            return f"{self.value:+.2f}"
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


class Agreement(BaseModel):
    """How a proxy ranking agrees with the reference ranking over `n` architectures."""

    n: int
    kendall_tau: Estimate
    spearman_rho: Estimate
    top_k: int
    top_k_overlap: float | None  # |top-k by proxy ∩ top-k by reference| / k
    confidence: float
    resamples: int
    resamples_used: int  # resamples where neither side was all ties (the statistic exists)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (scipy); nan when either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: nan is the answer
        return float(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (scipy); nan when either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def top_k_overlap(proxy: Sequence[float], reference: Sequence[float], k: int) -> float:
    """Share of the k best architectures by the reference that are also the k best by the proxy."""
    best_proxy = set(np.argsort(proxy, kind="stable")[:k].tolist())
    best_reference = set(np.argsort(reference, kind="stable")[:k].tolist())
    return len(best_proxy & best_reference) / k


def _bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    x: np.ndarray,
    y: np.ndarray,
    resamples: np.ndarray,
    confidence: float,
) -> tuple[float | None, float | None, int]:
    """Percentile interval of `statistic` over paired resamples of the architectures.

    A resample that draws one architecture many times can make a side constant, where tau
    and rho do not exist; such draws are left out (their count is reported), which scipy's
    `stats.bootstrap` cannot do (one nan makes its whole interval nan).
    """
    values = np.array([statistic(x[idx], y[idx]) for idx in resamples])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None, 0
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high), len(values)


def agreement(
    proxy: Sequence[float],
    reference: Sequence[float],
    *,
    top_k: int = 3,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Agreement:
    """Rank agreement of `proxy` with `reference` (paired: one value each per architecture)."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(reference, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"proxy and reference need one value per architecture: {x.shape}, {y.shape}"
        )
    n = len(x)
    k = max(1, min(top_k, n))
    if n < MIN_ARCHS:
        none = Estimate(value=None)
        return Agreement(
            n=n, kendall_tau=none, spearman_rho=none, top_k=k, top_k_overlap=None,
            confidence=confidence, resamples=0, resamples_used=0,
        )  # fmt: skip
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    estimates, used = {}, resamples
    for name, statistic in (("tau", kendall_tau), ("rho", spearman_rho)):
        value = statistic(x, y)
        low, high, used = _bootstrap(statistic, x, y, draws, confidence)
        estimates[name] = Estimate(value=None if np.isnan(value) else value, low=low, high=high)
    return Agreement(
        n=n, kendall_tau=estimates["tau"], spearman_rho=estimates["rho"], top_k=k,
        top_k_overlap=top_k_overlap(x, y, k), confidence=confidence, resamples=resamples,
        resamples_used=used,
    )  # fmt: skip
