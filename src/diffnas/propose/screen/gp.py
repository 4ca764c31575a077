"""The GP screener: a Gaussian process on the measured trials, ranking by expected improvement.

scikit-learn's `GaussianProcessRegressor` is fitted to every measured trial of the memory
(complete, scored on the whole proxy run; warm-start trials included) over the encoding of
`diffnas.propose.screen.encoding`. Kernel: a constant times a Matérn-5/2 with one length
scale per feature (automatic relevance determination, each in [0.5, 100]), plus white noise for the proxy's seed
noise; the targets are standardised (`normalize_y`); the hyperparameters are fitted by
maximum likelihood with the optimizer's restarts seeded by the request. Each candidate's
predicted score is the posterior mean; the ranking is by expected improvement (EI) over the
best measured score (lower is better), so a candidate the GP knows little about can still
beat one predicted slightly better. With fewer than `min_observations` measured trials there is
nothing to learn from: the proposer's order is kept and nothing is predicted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from diffnas.gate.memory import TrialRecord
from diffnas.propose.screen.base import ORDER_KEPT, Ranking, ScreenContext, Screener, proposer_order
from diffnas.propose.screen.encoding import encode

MIN_OBSERVATIONS = 3
# On inputs scaled to [0, 1]: below 1/2 one binary field alone could decorrelate two
# architectures, which a few dozen noisy observations cannot support (on the toy objective of
# tests/test_screen_gp.py a lower bound of 0.01 let the fit collapse onto one field: tau 0.2).
LENGTH_SCALE_BOUNDS = (0.5, 100.0)


def observations(memory: list[TrialRecord]) -> list[TrialRecord]:
    """The measured trials a GP learns from: scored on the whole proxy run, finite scores."""
    return [
        t
        for t in memory
        if t.evaluated and t.arch is not None and math.isfinite(float(t.score))  # type: ignore[arg-type]
    ]


@dataclass
class Posterior:
    """The GP's belief about the candidates' scores, and what it learnt from."""

    mean: np.ndarray
    cov: np.ndarray  # predictive covariance (measurement noise included)
    best: float  # the best measured score
    observations: int

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 1e-12, None))

    def expected_improvement(self) -> np.ndarray:
        """E[max(best - f(x), 0)] under the posterior, per candidate (minimisation)."""
        std = self.std
        improvement = self.best - self.mean
        z = improvement / std
        return improvement * norm.cdf(z) + std * norm.pdf(z)

    def prob_worse(self, i: int, j: int) -> float:
        """P(score of candidate i > score of candidate j), with their posterior correlation."""
        var = self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j]
        return float(norm.cdf((self.mean[i] - self.mean[j]) / math.sqrt(max(var, 1e-12))))


def fit_posterior(
    ctx: ScreenContext, min_observations: int = MIN_OBSERVATIONS, restarts: int = 2
) -> Posterior | None:
    """The GP posterior at the candidates, or None with fewer than `min_observations` trials."""
    seen = observations(ctx.memory)
    if len(seen) < min_observations or not ctx.candidates:
        return None
    x = encode(ctx.space, [t.arch for t in seen] + [c.arch for c in ctx.candidates])  # type: ignore[misc]
    if x.shape[1] == 0:
        return None  # every architecture encodes alike: nothing to tell them apart by
    y = np.array([float(t.score) for t in seen])  # type: ignore[arg-type]
    d = x.shape[1]
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
        length_scale=np.ones(d), length_scale_bounds=LENGTH_SCALE_BOUNDS, nu=2.5
    ) + WhiteKernel(1e-2, (1e-6, 1e0))
    gp = GaussianProcessRegressor(
        kernel=kernel,
        normalize_y=True,
        n_restarts_optimizer=restarts,
        random_state=ctx.seed % 2**32,
    )
    with warnings.catch_warnings():
        # a length scale at its bound is an answer, not a fault, on a handful of trials
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x[: len(seen)], y)
        mean, cov = gp.predict(x[len(seen) :], return_cov=True)
    return Posterior(mean=mean, cov=np.atleast_2d(cov), best=float(y.min()), observations=len(seen))


class GPScreener(Screener):
    """Ranks by the GP's expected improvement; predicts its posterior mean."""

    name = "gp"

    def __init__(self, *, min_observations: int = MIN_OBSERVATIONS, restarts: int = 2) -> None:
        self.min_observations = min_observations
        self.restarts = restarts  # the likelihood optimizer's restarts (seeded)

    def rank(self, ctx: ScreenContext) -> Ranking:
        posterior = fit_posterior(ctx, self.min_observations, self.restarts)
        if posterior is None:
            n = len(observations(ctx.memory))
            return proposer_order(
                ctx,
                f"the GP needs {self.min_observations} measured trials, the memory has "
                f"{n}{ORDER_KEPT}",
            )
        ei, std = posterior.expected_improvement(), posterior.std
        order = sorted(range(len(ei)), key=lambda i: (-ei[i], i))
        return Ranking(
            order=order,
            predicted=[float(m) for m in posterior.mean],
            notes=[
                f"GP {m:.4g} +- {s:.2g}, EI {e:.3g}" for m, s, e in zip(posterior.mean, std, ei)
            ],
            info=f"GP on {posterior.observations} measured trials",
        )
