"""Fréchet distance and KID between two feature sets (torch-fidelity's math, in float64).

FID = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½). torch-fidelity (after TTUR) takes the
trace term as the sum of square roots of the eigenvalues of S1·S2 (`np.linalg.eigvals`, no
`scipy.linalg.sqrtm`). We compute the same eigenvalues from the symmetric matrix
S1^½ S2 S1^½ (same non-zero spectrum) with symmetric `eigh`, several times faster at D=2048
and free of round-off imaginary parts. When both sets have no more samples than dimensions
(RFID at small N), with S_i = X_iᵀX_i for centred, scaled features X_i (N_i×D), the trace is
the nuclear norm of X1 X2ᵀ (N1×N2): tr((X1ᵀX1 X2ᵀX2)^½) = Σ singular values of X1 X2ᵀ —
a min(N1, N2)² eigenproblem instead of a D² one.

KID is the unbiased MMD² with the polynomial kernel k(x, y) = (x·y / d + coef0)^degree,
averaged over random subsets (Bińkowski et al. 2018); subset draws follow torch-fidelity's
(`RandomState(seed).choice` without replacement), so the same seed gives its numbers. Subsets
must be proper (smaller than both sets): a subset as large as its set is the whole set in every
draw, and the std over subsets collapses to 0 — torch-fidelity's default of 1000 at N = 1000
does exactly that. `kid_subset_size` gives min(1000, N/2), torch-fidelity's 1000 from N = 2000 on.
"""

from __future__ import annotations

import numpy as np
import torch

from diffnas.errors import UserError


def _as_features(features: np.ndarray, field: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UserError(
            f"{field} must be a 2-D array of at least 2 feature rows, got shape {features.shape}",
            field=field,
        )
    return features


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of N×D features, float64."""
    features = _as_features(features, "features")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UserError(
            f"statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / "
            f"{sigma2.shape} (were they made with the same extractor?)",
            field="reference",
        )
    diff = mu1 - mu2
    return float(
        diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * _trace_sqrt(sigma1, sigma2)
    )


def _trace_sqrt(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^½) for symmetric PSD S1, S2 via the symmetric form S1^½ S2 S1^½."""
    # torch's LAPACK eigh is several times faster than numpy's OpenBLAS one at D=2048
    w, v = torch.linalg.eigh(torch.from_numpy(sigma1))
    sqrt1 = (v * w.clamp(min=0).sqrt()) @ v.T
    eigenvalues = torch.linalg.eigvalsh(sqrt1 @ torch.from_numpy(sigma2) @ sqrt1)
    return eigenvalues.clamp(min=0).sqrt().sum().item()


def frechet_distance_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance of two feature sets; uses the fast N×N path when N <= D for both."""
    feats1, feats2 = _as_features(feats1, "feats1"), _as_features(feats2, "feats2")
    n1, n2, d = len(feats1), len(feats2), feats1.shape[1]
    if max(n1, n2) > d or feats2.shape[1] != d:
        return frechet_distance(*feature_statistics(feats1), *feature_statistics(feats2))
    mu1, mu2 = feats1.mean(axis=0), feats2.mean(axis=0)
    x1 = torch.from_numpy((feats1 - mu1) / np.sqrt(n1 - 1))  # S1 = x1ᵀ x1
    x2 = torch.from_numpy((feats2 - mu2) / np.sqrt(n2 - 1))
    cross = x1 @ x2.T if n1 <= n2 else x2 @ x1.T  # the smaller Gram matrix: min(n1, n2)²
    # singular values of x1 x2ᵀ = sqrt(eigenvalues of cross crossᵀ) (LAPACK's SVD is slower)
    tr_covmean = torch.linalg.eigvalsh(cross @ cross.T).clamp(min=0).sqrt().sum().item()
    diff = mu1 - mu2
    traces = (x1 * x1).sum().item() + (x2 * x2).sum().item()
    return float(diff @ diff + traces - 2 * tr_covmean)


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)  # the diagonal (k(x, x)) is left out: unbiased
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


KID_SUBSET_SIZE = 1000  # torch-fidelity's default (clean-fid's cap)


def kid_subset_size(num_generated: int, num_reference: int) -> int:
    """The default KID subset size: min(1000, N/2) over both sets, so subsets are proper and
    their spread reflects the sampling variance (two subsets share about half their images)."""
    return min(KID_SUBSET_SIZE, num_generated // 2, num_reference // 2)


def kid(
    feats1: np.ndarray,
    feats2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    gamma: float | None = None,
    seed: int = 2020,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased MMD² over `subsets` random subsets.

    `subset_size` must be smaller than both sets (see the module docstring).
    """
    feats1, feats2 = _as_features(feats1, "feats1"), _as_features(feats2, "feats2")
    if feats1.shape[1] != feats2.shape[1]:
        raise UserError(
            f"feature sizes differ: {feats1.shape[1]} vs {feats2.shape[1]}", field="reference"
        )
    if not 2 <= subset_size < min(len(feats1), len(feats2)):
        raise UserError(
            f"kid subset_size {subset_size} must be at least 2 and smaller than both sets "
            f"({len(feats1)} generated, {len(feats2)} reference): a subset as large as its set "
            f"is the same set in every draw, and the std over subsets would be 0 "
            f"(default: min(1000, N/2) = {kid_subset_size(len(feats1), len(feats2))})",
            field="subset_size",
        )
    if subsets < 1:
        raise UserError(f"kid subsets must be >= 1, got {subsets}", field="subsets")
    gamma = 1.0 / feats1.shape[1] if gamma is None else gamma

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T * gamma + coef0) ** degree

    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = feats1[rng.choice(len(feats1), subset_size, replace=False)]
        y = feats2[rng.choice(len(feats2), subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(kernel(x, x), kernel(x, y), kernel(y, y))
    return float(mmds.mean()), float(mmds.std())
