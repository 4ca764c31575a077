"""Rank agreement: closed-form Kendall tau, Spearman rho and top-k overlap; the bootstrap."""

from __future__ import annotations

import pytest

from diffnas.experiments.ranking import agreement, top_k_overlap


def test_identical_rankings_agree_perfectly() -> None:
    a = agreement([0.3, 0.1, 0.5, 0.2, 0.9], [30, 10, 50, 20, 90], top_k=2, resamples=300)
    assert a.kendall_tau.value == pytest.approx(1) and a.spearman_rho.value == pytest.approx(1)
    # every resample of a perfect ranking is perfect (or degenerate, and left out)
    assert (a.kendall_tau.low, a.kendall_tau.high) == pytest.approx((1, 1))
    assert a.top_k_overlap == 1 and a.top_k == 2


def test_reversed_ranking_is_minus_one() -> None:
    a = agreement([1, 2, 3, 4], [4, 3, 2, 1], top_k=2, resamples=200)
    assert a.kendall_tau.value == pytest.approx(-1) and a.spearman_rho.value == pytest.approx(-1)
    assert a.top_k_overlap == 0


def test_one_swapped_pair_closed_form() -> None:
    # 4 items, one adjacent swap: 5 concordant and 1 discordant pair of 6, tau = (5 - 1) / 6;
    # rank differences (0, 1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    a = agreement([1, 2, 3, 4], [1, 3, 2, 4], top_k=2, resamples=200)
    assert a.kendall_tau.value == pytest.approx(4 / 6)
    assert a.spearman_rho.value == pytest.approx(0.8)
    assert a.kendall_tau.low <= a.kendall_tau.value <= a.kendall_tau.high
    # best two by proxy {0, 1}, by reference {0, 2}: one shared
    assert a.top_k_overlap == 0.5 == top_k_overlap([1, 2, 3, 4], [1, 3, 2, 4], 2)


def test_degenerate_resamples_are_left_out_not_nan() -> None:
    # with 3 architectures, a resample often repeats one architecture on every draw
    a = agreement([1, 2, 3], [1, 3, 2], resamples=500, seed=1)
    assert 0 < a.resamples_used < 500
    assert a.kendall_tau.low is not None and -1 <= a.kendall_tau.low <= a.kendall_tau.high <= 1


def test_too_few_architectures_give_no_statistic() -> None:
    a = agreement([1, 2], [2, 1])
    assert a.n == 2 and a.kendall_tau.value is None and a.top_k_overlap is None
