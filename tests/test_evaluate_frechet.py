"""Fréchet distance and KID math: exact agreement with torch-fidelity, zero on identical sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from diffnas.errors import UserError
from diffnas.evaluate.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kid,
    kid_subset_size,
)


def _features(n: int = 200, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)


def test_frechet_matches_torch_fidelity_on_float64_features():
    a, b = _features(seed=0), _features(seed=1) * 1.3
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    theirs = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-7)
    assert ours > 0.1
    assert frechet_distance_from_features(a, b) == pytest.approx(ours, rel=1e-9)  # N > D: stats


def test_frechet_of_gaussians_has_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    # |dmu|² + sum (sqrt(s1) - sqrt(s2))² = 9 + (1-2)² + (2-1)²
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(11.0)


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(3)
    base = _features(n=300, d=32)
    mu, sigma = feature_statistics(base)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)
    fids = [
        frechet_distance(*feature_statistics(base + s * rng.normal(size=base.shape)), mu, sigma)
        for s in (0.1, 0.5, 1.5)
    ]
    assert fids[0] < fids[1] < fids[2]


def test_fewer_samples_than_dimensions_fast_path_matches_torch_fidelity():
    a, b = _features(n=12, d=64, seed=0), _features(n=9, d=64, seed=1) * 2
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    theirs = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    fast = frechet_distance_from_features(a, b)  # nuclear norm of the 12×9 cross matrix
    assert fast == pytest.approx(theirs, rel=1e-6)
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(
        fast, rel=1e-6
    )
    assert abs(frechet_distance_from_features(a, a)) < 1e-6 * np.trace(stats[0]["sigma"])


def test_kid_matches_torch_fidelity():
    a, b = _features(n=120, seed=0), _features(n=90, seed=1) + 0.3
    ours = kid(a, b, subsets=7, subset_size=50, seed=11)
    theirs = kid_features_to_metric(
        torch.from_numpy(a),
        torch.from_numpy(b),
        kid_subsets=7,
        kid_subset_size=50,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=11,
        verbose=False,
    )
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-9)


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_noise():
    # Subsets of one set overlap (K(x, x) terms), so "itself" means a fresh draw of the same law.
    rng = np.random.default_rng(4)
    base, other = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, same_std = kid(other, base, subsets=20, subset_size=200)
    kids = [
        kid(other + s * rng.normal(size=base.shape), base, subsets=20, subset_size=200)[0]
        for s in (0.5, 1.0, 2.0)
    ]
    assert abs(same) < 2 * same_std
    assert abs(same) < 0.1 * kids[1]
    assert kids[0] < kids[1] < kids[2]


def test_kid_rejects_subsets_that_are_not_proper():
    with pytest.raises(UserError, match="subset_size"):
        kid(_features(n=20), _features(n=30), subset_size=25)
    with pytest.raises(UserError, match="std over subsets would be 0"):
        kid(_features(n=20), _features(n=30), subset_size=20)  # every draw the whole set
    assert kid_subset_size(40, 5000) == 20 and kid_subset_size(1000, 1000) == 500
    assert kid_subset_size(50_000, 10_000) == 1000  # torch-fidelity's default at large N


def test_kid_std_at_the_default_subset_size_is_a_sampling_std():
    # The reference: the std of MMD² over independent draws of m points from each law (Monte
    # Carlo), what KID's ± is read as. Subsets of one pair of sets of N = 2m points share about
    # half their points, so their spread is √(1 − m/N) ≈ 0.7 of it; subsets of N − 1 points
    # share nearly all (std ~0.05×), and subsets of N points give exactly 0.
    n, d, shift = 200, 16, 0.3
    rng = np.random.default_rng(0)
    m = kid_subset_size(n, n)

    def mmd2(a: np.ndarray, b: np.ndarray) -> float:
        return kid(a, b, subsets=1, subset_size=len(a) - 1, seed=0)[0]  # one near-full subset

    independent = np.std(
        [mmd2(rng.normal(size=(m + 1, d)), rng.normal(size=(m + 1, d)) + shift) for _ in range(300)]
    )
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift
    _, std = kid(a, b, subsets=100, subset_size=m)
    _, nearly_full = kid(a, b, subsets=100, subset_size=n - 1)
    assert 0.4 * independent < std < 1.2 * independent
    assert nearly_full < 0.15 * independent


def test_mismatched_statistics_are_a_user_error():
    mu, sigma = feature_statistics(_features(d=8))
    with pytest.raises(UserError, match="same extractor"):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
