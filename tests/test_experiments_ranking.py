"""Rank agreement: closed-form Kendall tau, Spearman rho and top-k overlap; the bootstrap; with
several seeds, the agreement with the mean reference and the noise ceiling against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from diffnas.experiments.ranking import agreement, seed_agreement, top_k_overlap


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


# ----- several seeds: agreement with the mean reference and the noise ceiling -----

# 6 architectures x 3 seeds, constructed: a clear trend plus seed noise
REFERENCE = np.array(
    [[1.0, 1.4, 0.9], [2.0, 1.7, 2.6], [3.1, 2.8, 2.2], [3.9, 4.6, 4.1], [5.2, 4.4, 5.0],
     [6.0, 6.3, 5.1]]
)  # fmt: skip
PROXY = np.array(
    [[2.0, 1.0, 3.5], [1.0, 2.2, 2.0], [3.0, 3.3, 1.1], [4.4, 3.9, 4.0], [4.0, 6.1, 5.9],
     [6.5, 5.0, 6.2]]
)  # fmt: skip


def scipy_tau(x, y) -> float:
    return stats.kendalltau(x, y).statistic


def test_ceiling_is_each_seed_against_the_mean_of_the_others() -> None:
    a = seed_agreement(REFERENCE, REFERENCE, ceiling=True, resamples=300)
    expected = np.mean(
        [scipy_tau(REFERENCE[:, k], np.delete(REFERENCE, k, axis=1).mean(axis=1)) for k in range(3)]
    )
    assert a.kendall_tau.value == pytest.approx(expected)
    rho = np.mean(
        [
            stats.spearmanr(REFERENCE[:, k], np.delete(REFERENCE, k, axis=1).mean(axis=1)).statistic
            for k in range(3)
        ]
    )
    assert a.spearman_rho.value == pytest.approx(rho)
    # with two seeds the ceiling is the seed-to-seed tau
    two = seed_agreement(REFERENCE[:, :2], REFERENCE[:, :2], ceiling=True, resamples=300)
    assert two.kendall_tau.value == pytest.approx(scipy_tau(REFERENCE[:, 0], REFERENCE[:, 1]))
    assert two.seed_tau.value == pytest.approx(two.kendall_tau.value)
    # one seed: no ceiling to measure
    one = seed_agreement(REFERENCE[:, :1], REFERENCE[:, :1], ceiling=True, resamples=300)
    assert one.kendall_tau.value is None and one.seed_tau.value is None


def test_proxy_against_the_mean_reference_and_its_own_repeatability() -> None:
    a = seed_agreement(PROXY, REFERENCE, top_k=2, resamples=500, seed=4)
    mean_reference = REFERENCE.mean(axis=1)
    assert a.kendall_tau.value == pytest.approx(
        np.mean([scipy_tau(PROXY[:, k], mean_reference) for k in range(3)])
    )
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert a.seed_tau.value == pytest.approx(
        np.mean([scipy_tau(PROXY[:, i], PROXY[:, j]) for i, j in pairs])
    )
    # the seed spread: pooled within-architecture sd over the sd of the architectures' means
    within = np.sqrt(np.mean([np.var(row, ddof=1) for row in PROXY]))
    between = np.std(PROXY.mean(axis=1), ddof=1)
    assert a.spread.seed_sd == pytest.approx(within)
    assert a.spread.ratio == pytest.approx(within / between)
    # the interval: percentiles of the statistic over architecture resamples, written again
    draws = np.random.default_rng(4).integers(0, 6, size=(500, 6))
    values = []
    for idx in draws:
        taus = [scipy_tau(PROXY[idx, k], REFERENCE[idx].mean(axis=1)) for k in range(3)]
        taus = [t for t in taus if np.isfinite(t)]
        if taus:
            values.append(np.mean(taus))
    assert (a.kendall_tau.low, a.kendall_tau.high) == pytest.approx(
        tuple(np.percentile(values, [2.5, 97.5]))
    )
    # one seed each: exactly the single-seed agreement (what proxy-check gave before seeds)
    single = seed_agreement(PROXY[:, :1], REFERENCE[:, :1], top_k=2, resamples=500, seed=4)
    plain = agreement(PROXY[:, 0], REFERENCE[:, 0], top_k=2, resamples=500, seed=4)
    assert single.kendall_tau == plain.kendall_tau and single.top_k_overlap == plain.top_k_overlap
