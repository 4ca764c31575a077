"""How well one ranking of architectures predicts another: Kendall's tau, Spearman's rho with
bootstrap confidence intervals over the architectures, and the overlap of the top k.

Lower is better on both sides (RFID, KID, loss, FID), so a perfect proxy has tau = rho = 1.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from diffnas.ranks import kendall_taus, spearman_rhos

MIN_ARCHS = 3  # fewer points carry no ranking information
# A statistic of (x, y) over the architectures (the last axis, or the last but one for scores
# per seed): a float, or an array over any leading axes (the bootstrap's resamples)
Statistic = Callable[[np.ndarray, np.ndarray], Any]


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


def top_k_overlap(proxy: Sequence[float], reference: Sequence[float], k: int) -> float:
    """Share of the k best architectures by the reference that are also the k best by the proxy."""
    best_proxy = set(np.argsort(proxy, kind="stable")[:k].tolist())
    best_reference = set(np.argsort(reference, kind="stable")[:k].tolist())
    return len(best_proxy & best_reference) / k


def _bootstrap(
    statistic: Statistic,
    x: np.ndarray,
    y: np.ndarray,
    resamples: np.ndarray,
    confidence: float,
) -> tuple[float | None, float | None, int]:
    """Percentile interval of `statistic` over paired resamples of the architectures.

    The statistic takes every resample at once (a leading axis: `x[resamples]`). A resample
    that draws one architecture many times can make a side constant, where tau and rho do not
    exist; such draws are left out (their count is reported), which scipy's `stats.bootstrap`
    cannot do (one nan makes its whole interval nan).
    """
    values = np.asarray(statistic(x[resamples], y[resamples]), dtype=float).reshape(-1)
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
    for name, statistic in (("tau", kendall_taus), ("rho", spearman_rhos)):
        value = float(statistic(x, y))
        low, high, used = _bootstrap(statistic, x, y, draws, confidence)
        estimates[name] = Estimate(value=None if np.isnan(value) else value, low=low, high=high)
    return Agreement(
        n=n, kendall_tau=estimates["tau"], spearman_rho=estimates["rho"], top_k=k,
        top_k_overlap=top_k_overlap(x, y, k), confidence=confidence, resamples=resamples,
        resamples_used=used,
    )  # fmt: skip


# ----- several seeds: agreement against the mean reference, and the noise ceiling -----
#
# Scores come as arrays of one row per architecture and one column per seed (after any leading
# axes: the bootstrap's resamples, all at once; the statistics below keep them). A search sees one
# seed of its proxy, so a proxy's agreement is the mean over its seeds of its agreement with
# the mean reference. The ceiling is the same statistic for the reference itself: each seed
# against the mean of the other seeds (with two seeds, the seed-to-seed tau). A proxy near the
# ceiling ranks as well as running the reference again would.


def _mean_over_seeds(per_seed: list[Any], x: np.ndarray) -> Any:
    """The mean of per-seed statistics of `x` (arrays over its leading axes, or floats), nan
    ones left out; nan where every one is nan or there is none. A float for a 2-D `x`."""
    if not per_seed:
        mean = np.full(x.shape[:-2], np.nan)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all nan: the mean is nan
            mean = np.nanmean(np.stack([np.asarray(v, dtype=float) for v in per_seed], -1), -1)
    return float(mean) if mean.ndim == 0 else mean


def against_mean(
    statistic: Statistic,
) -> Statistic:
    """`statistic` of each proxy seed (a column of x) against the mean reference (over y's
    columns), averaged over the proxy's seeds (nan ones left out)."""

    def paired(x: np.ndarray, y: np.ndarray) -> Any:
        target = y.mean(axis=-1)
        return _mean_over_seeds([statistic(x[..., k], target) for k in range(x.shape[-1])], x)

    return paired


def leave_one_out(
    statistic: Statistic,
) -> Statistic:
    """`statistic` of each seed of x against the mean of x's other seeds, averaged: the noise
    ceiling (nan with one seed). The second argument is ignored (bootstrap's pairing)."""

    def ceiling(x: np.ndarray, _: np.ndarray | None = None) -> Any:
        seeds = x.shape[-1]
        others = [np.delete(x, k, axis=-1).mean(axis=-1) for k in range(seeds)] if seeds > 1 else []
        return _mean_over_seeds([statistic(x[..., k], o) for k, o in enumerate(others)], x)

    return ceiling


def seed_to_seed(x: np.ndarray, _: np.ndarray | None = None) -> Any:
    """Kendall's tau between two seeds of the same scores, averaged over every pair of seeds:
    how repeatable one ranking is (nan with one seed)."""
    seeds = x.shape[-1]
    pairs = [(i, j) for i in range(seeds) for j in range(i + 1, seeds)]
    return _mean_over_seeds([kendall_taus(x[..., i], x[..., j]) for i, j in pairs], x)


def split_half(x: np.ndarray, _: np.ndarray | None = None) -> Any:
    """Kendall's tau between the means of two disjoint halves of the seeds (n // 2 each),
    averaged over every such split: how well a mean over half the seeds ranks itself - the
    repeatability of a reference averaged over seeds, as a table uses it (nan below 4 seeds)."""
    seeds = x.shape[-1]
    if seeds < 4:
        return _mean_over_seeds([], x)
    half, taus = seeds // 2, []
    for first in itertools.combinations(range(seeds), half):
        rest = [k for k in range(seeds) if k not in first]
        # each unordered split once: its halves as sorted tuples, the smaller one first
        for second in (c for c in itertools.combinations(rest, half) if first < c):
            means = x[..., list(first)].mean(axis=-1), x[..., list(second)].mean(axis=-1)
            taus.append(kendall_taus(*means))
    return _mean_over_seeds(taus, x)


class SeedSpread(BaseModel):
    """How far one architecture's score moves between seeds, against how far architectures differ."""

    seed_sd: float | None  # pooled within-architecture standard deviation over seeds
    arch_sd: float | None  # standard deviation of the architectures' mean scores
    ratio: float | None  # seed_sd / arch_sd: 0 is noise-free, near 1 means noise as large as signal


def seed_spread(x: np.ndarray) -> SeedSpread:
    n, seeds = x.shape
    seed_sd = float(np.sqrt(np.mean(np.var(x, axis=1, ddof=1)))) if seeds > 1 and n else None
    arch_sd = float(np.std(x.mean(axis=1), ddof=1)) if n > 1 else None
    ratio = seed_sd / arch_sd if seed_sd is not None and arch_sd else None
    return SeedSpread(seed_sd=seed_sd, arch_sd=arch_sd, ratio=ratio)


class SeedAgreement(BaseModel):
    """A proxy (several seeds) against the mean of a reference (several seeds) over n archs."""

    n: int
    seeds: int  # the proxy's seeds
    kendall_tau: Estimate  # mean over proxy seeds of tau(seed, mean reference)
    spearman_rho: Estimate
    seed_tau: Estimate  # the proxy's own seed-to-seed tau (its repeatability)
    top_k: int
    top_k_overlap: float | None  # mean over proxy seeds, against the mean reference
    spread: SeedSpread
    confidence: float
    resamples: int
    resamples_used: int


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """The bootstrap's resamples of n architectures (one row each), the same for every
    statistic of one call, so `kendall_estimate` gives `seed_agreement`'s interval."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _estimate(
    statistic: Statistic,
    x: np.ndarray,
    y: np.ndarray,
    draws: np.ndarray,
    confidence: float,
) -> tuple[Estimate, int]:
    value = statistic(x, y)
    low, high, used = _bootstrap(statistic, x, y, draws, confidence)
    if not np.isfinite(value):
        return Estimate(value=None), used
    return Estimate(value=value, low=low, high=high), used


def seed_agreement(
    proxy: np.ndarray,
    reference: np.ndarray,
    *,
    top_k: int = 3,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    ceiling: bool = False,
) -> SeedAgreement:
    """Agreement of `proxy` with the mean of `reference` (arrays: architecture x seed) with
    bootstrap intervals over the architectures. `ceiling`: `proxy` is the reference itself, so
    each seed is compared with the mean of the others (`leave_one_out`)."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(reference, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need architecture x seed arrays of as many rows: {x.shape}, {y.shape}")
    n, seeds = x.shape
    k = max(1, min(top_k, n))
    none = Estimate(value=None)
    if n < MIN_ARCHS:
        return SeedAgreement(
            n=n, seeds=seeds, kendall_tau=none, spearman_rho=none, seed_tau=none, top_k=k,
            top_k_overlap=None, spread=seed_spread(x), confidence=confidence, resamples=0,
            resamples_used=0,
        )  # fmt: skip
    wrap = leave_one_out if ceiling else against_mean
    draws = _draws(n, resamples, seed)
    tau, used = _estimate(wrap(kendall_taus), x, y, draws, confidence)
    rho, _ = _estimate(wrap(spearman_rhos), x, y, draws, confidence)
    repeat, _ = _estimate(seed_to_seed, x, y, draws, confidence) if seeds > 1 else (none, 0)
    overlap = wrap(lambda a, b: top_k_overlap(a, b, k))(x, y)
    return SeedAgreement(
        n=n, seeds=seeds, kendall_tau=tau, spearman_rho=rho, seed_tau=repeat, top_k=k,
        top_k_overlap=None if not np.isfinite(overlap) else overlap, spread=seed_spread(x),
        confidence=confidence, resamples=resamples, resamples_used=used,
    )  # fmt: skip


def split_half_estimate(
    reference: np.ndarray, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """`split_half` with its bootstrap interval over the architectures (None below 4 seeds)."""
    x = np.asarray(reference, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4 or x.shape[0] < MIN_ARCHS:
        return Estimate(value=None)
    return _estimate(split_half, x, x, _draws(x.shape[0], resamples, seed), confidence)[0]


def kendall_estimate(
    proxy: np.ndarray,
    reference: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    ceiling: bool = False,
) -> Estimate:
    """`seed_agreement`'s Kendall tau with its interval alone (the same resamples, so the same
    numbers) for a reader that needs nothing else: about a third of the bootstrap's work."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(reference, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need architecture x seed arrays of as many rows: {x.shape}, {y.shape}")
    n = x.shape[0]
    if n < MIN_ARCHS:
        return Estimate(value=None)
    wrap = leave_one_out if ceiling else against_mean
    return _estimate(wrap(kendall_taus), x, y, _draws(n, resamples, seed), confidence)[0]
