"""Rank correlations: the one home of Kendall's tau (and Spearman's rho) in diffnas.

Every tau diffnas reports comes from here: a screener's predictions against the measured
scores (`search/screening.py`), a proxy against the reference and the reference against
itself (`experiments/ranking.py`, with bootstrap intervals), and the proxy-check scatter's
title (`report/plots.py`). Both are scipy's: tau-b (ties counted as ties) and rho.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from scipy import stats


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; nan when either side is constant or has fewer than 2 values."""
    if len(x) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: nan is the answer
        return float(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho; nan when either side is constant or has fewer than 2 values."""
    if len(x) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def defined(value: float) -> float | None:
    """A statistic for a file or a title: None where it is undefined (nan)."""
    return None if math.isnan(value) else value
