"""Rank correlations: the one home of Kendall's tau (and Spearman's rho) in diffnas.

Every tau diffnas reports comes from here: a screener's predictions against the measured
scores (`search/screening.py`), a proxy against the reference and the reference against
itself (`experiments/ranking.py`, with bootstrap intervals), and the proxy-check scatter's
title (`report/plots.py`). Both are the statistics scipy computes - tau-b (ties counted as
ties) and rho on average ranks - and `tests/test_ranks.py` holds them to scipy's values.

They are computed here, batched over leading axes, because a bootstrap asks for thousands of
them over a few dozen architectures: one `scipy.stats.kendalltau` call costs about half a
millisecond of input checking for a microsecond of arithmetic, and a table's summary spent
most of its time there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

_PAIRS_PER_CHUNK = 2_000_000  # sign entries `kendall_taus` holds at once (16 MB an array)
_MAX_PAIRWISE_N = 150  # above it, per-row scipy is as fast (benchmarks/bench_ranks.py)


def _scipy_taus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: nan is the answer
        return np.array([stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)])


def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y need the same shape: {x.shape}, {y.shape}")
    return x, y


def kendall_taus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis, batched over the leading ones; nan where a side is
    constant, has fewer than 2 values or holds a nan (as scipy's, `nan_policy="propagate"`).

    tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y): a
    constant side gives 0 / 0 and a nan gives nan signs, so both come out nan by themselves."""
    x, y = _paired(x, y)
    batch, n = x.shape[:-1], x.shape[-1]
    if n < 2 or x.size == 0:
        return np.full(batch, np.nan)
    x, y = x.reshape(-1, n), y.reshape(-1, n)
    if n > _MAX_PAIRWISE_N:  # scipy's O(n log n) beats the n^2 signs here
        return _scipy_taus(x, y).reshape(batch)
    out = np.full(len(x), np.nan)
    i, j = np.triu_indices(n, 1)
    step = max(1, _PAIRS_PER_CHUNK // len(i))
    for start in range(0, len(x), step):
        xs, ys = x[start : start + step], y[start : start + step]
        dx, dy = np.sign(xs[:, i] - xs[:, j]), np.sign(ys[:, i] - ys[:, j])
        untied = np.count_nonzero(dx, axis=1) * np.count_nonzero(dy, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = (dx * dy).sum(axis=1) / np.sqrt(untied)
        out[start : start + step] = np.clip(tau, -1.0, 1.0)
    return out.reshape(batch)


def spearman_rhos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis (Pearson's r of the average ranks), batched over the
    leading ones; nan where a side is constant, has fewer than 2 values or holds a nan."""
    x, y = _paired(x, y)
    if x.shape[-1] < 2:
        return np.full(x.shape[:-1], np.nan)
    rx = stats.rankdata(x, axis=-1, nan_policy="propagate")
    ry = stats.rankdata(y, axis=-1, nan_policy="propagate")
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    return np.clip(rho, -1.0, 1.0)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two lists; nan when either side is constant or has fewer than 2."""
    return float(kendall_taus(*_paired(x, y)))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of two lists; nan when either side is constant or has fewer than 2."""
    return float(spearman_rhos(*_paired(x, y)))


def defined(value: float) -> float | None:
    """A statistic for a file or a title: None where it is undefined (nan)."""
    return None if math.isnan(value) else value
