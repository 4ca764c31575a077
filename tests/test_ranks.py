"""The rank correlations diffnas reports are scipy's: tau-b and rho, ties, nan and batches."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from diffnas.ranks import kendall_tau, kendall_taus, spearman_rho, spearman_rhos


def scipy_values(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and answers nan
        return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


@pytest.mark.parametrize("n", [2, 3, 5, 12, 40, 151])  # 151: the per-row path
def test_every_value_is_scipys_with_ties_and_constant_sides(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, size=(300, n)).astype(float)  # many ties, some constant rows
    y = rng.normal(size=(300, n))
    y[::3] = np.round(y[::3])  # ties on both sides
    taus, rhos = kendall_taus(x, y), spearman_rhos(x, y)
    for row, (a, b) in enumerate(zip(x, y, strict=True)):
        tau, rho = scipy_values(a, b)
        for ours, theirs in ((taus[row], tau), (rhos[row], rho)):
            if math.isnan(theirs):
                assert math.isnan(ours), (a, b)
            else:
                assert ours == pytest.approx(theirs, abs=1e-12), (a, b)
        assert kendall_tau(a.tolist(), b.tolist()) == pytest.approx(tau, abs=1e-12, nan_ok=True)


def test_closed_forms_and_undefined_cases() -> None:
    # one swapped pair of four: (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert spearman_rho([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    for x, y in (([], []), ([1.0], [2.0]), ([1, 1, 1], [1, 2, 3]), ([1, 2, math.nan], [1, 2, 3])):
        assert math.isnan(kendall_tau(x, y)) and math.isnan(spearman_rho(x, y))


def test_batches_keep_their_leading_axes() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5, 7)), rng.normal(size=(3, 5, 7))
    assert kendall_taus(x, y).shape == (3, 5) and spearman_rhos(x, y).shape == (3, 5)
    assert kendall_taus(x, y)[2, 4] == pytest.approx(kendall_tau(x[2, 4], y[2, 4]))
    with pytest.raises(ValueError, match="same shape"):
        kendall_taus(x, y[:, :, :6])
