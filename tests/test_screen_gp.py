"""The GP screener on a toy objective: a known quadratic of the architecture's fields.

Twenty measured architectures of the tiny space are the memory; the GP must order forty others
by the objective better than chance (Kendall tau from scipy > 0.5). Costs are given, not
measured (a formula of the fields), so the test takes a second.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from diffnas.gate.memory import TrialRecord
from diffnas.propose.screen import Candidate, GPScreener, ScreenContext
from diffnas.propose.screen.encoding import encode, feature_names
from diffnas.propose.screen.gp import fit_posterior
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace, load_space

# A toy space: the tiny one with five fields searched (base channels, multipliers, blocks,
# attention placement, dropout), the others fixed.
SPACE = SearchSpace.model_validate(
    {
        **load_space("tiny").model_dump(),
        "name": "toy",
        "mid_attention": [True],
        "head_channels": [16],
        "scale_shift_norm": [False],
        "resblock_updown": [False],
    }
)


def objective(arch: ArchConfig) -> float:
    """A quadratic of the fields with its optimum inside the space (lower is better)."""
    mult = sum(arch.channel_mult) / len(arch.channel_mult)
    return (
        (math.log2(arch.base_channels) - 4.6) ** 2
        + 0.8 * (mult - 2.0) ** 2
        + 0.6 * (arch.num_res_blocks - 1.7) ** 2
        + 0.3 * len(arch.attention_resolutions)
        + 0.5 * arch.dropout * 10 * (1 - 0.5 * arch.scale_shift_norm)
    )


def fake_cost(arch: ArchConfig) -> tuple[float, float]:
    width = arch.base_channels * sum(arch.channel_mult)
    return width * width * arch.num_res_blocks / 1e6, width * arch.num_res_blocks / 100


def distinct_archs(n: int, seed: int) -> list[ArchConfig]:
    rng, found = random.Random(seed), {}
    while len(found) < n:
        arch = SPACE.sample(rng)
        found.setdefault(arch.key(), arch)
    return list(found.values())


def measured(archs: list[ArchConfig]) -> list[TrialRecord]:
    records = []
    for i, arch in enumerate(archs):
        gmacs, params = fake_cost(arch)
        records.append(
            TrialRecord(
                number=i, round=i // 2, slot=i % 2, proposer="random", status="complete",
                arch=arch, gmacs=gmacs, params_m=params, score=objective(arch),
            )
        )  # fmt: skip
    return records


def context(memory: list[TrialRecord], archs: list[ArchConfig], k: int = 2) -> ScreenContext:
    candidates = [Candidate(a, *fake_cost(a)) for a in archs]
    return ScreenContext(space=SPACE, memory=memory, candidates=candidates, k=k, seed=3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_gp_recovers_a_quadratic_ordering_from_20_observations(seed: int) -> None:
    archs = distinct_archs(60, seed)
    ctx = context(measured(archs[:20]), archs[20:])
    ranking = GPScreener().rank(ctx)
    truth = [objective(a) for a in archs[20:]]
    tau = stats.kendalltau(ranking.predicted, truth).statistic
    assert tau > 0.5, tau
    # better than the best constant guess too: the GP's mean error is below the spread
    error = np.mean(np.abs(np.array(ranking.predicted) - truth))
    assert error < np.std(truth)


def test_gp_ranks_by_expected_improvement_over_the_best_measured_score() -> None:
    archs = distinct_archs(30, 5)
    memory = measured(archs[:12])
    ctx = context(memory, archs[12:])
    posterior = fit_posterior(ctx)
    assert posterior is not None and posterior.best == min(t.score for t in memory)
    # EI of a minimisation, written out (Jones et al. 1998)
    std = np.sqrt(np.diag(posterior.cov))
    gain = posterior.best - posterior.mean
    ei = gain * stats.norm.cdf(gain / std) + std * stats.norm.pdf(gain / std)
    ranking = GPScreener().rank(ctx)
    assert ranking.order == sorted(range(len(ei)), key=lambda i: -ei[i])
    assert ranking.predicted == pytest.approx(list(posterior.mean))


def test_too_few_observations_keep_the_proposer_order() -> None:
    archs = distinct_archs(6, 7)
    ranking = GPScreener().rank(context(measured(archs[:2]), archs[2:]))
    assert ranking.order == [0, 1, 2, 3] and ranking.predicted == [None] * 4
    assert "needs 3 measured trials, the memory has 2" in ranking.info


def test_encoding_drops_constant_columns_and_scales_to_the_unit_interval() -> None:
    names = feature_names(SPACE)
    assert names[:2] == ["log2_base_channels", "levels"]
    assert {"attention_at_8", "attention_at_4", "dropout"} <= set(names)
    archs = distinct_archs(10, 9)
    x = encode(SPACE, archs)
    assert x.min() == 0.0 and x.max() == 1.0
    # five fields have one allowed value in the toy space: their columns are gone
    assert x.shape == (10, len(names) - 5)
    assert x[:, 0].tolist() == [
        (math.log2(a.base_channels) - 4) / (math.log2(48) - 4) for a in archs
    ]
