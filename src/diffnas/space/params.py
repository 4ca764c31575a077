"""The space as Optuna parameters: each searched dimension is one categorical distribution.

Lists become strings ("1,2,2,2"; "none" for no attention) because Optuna's categorical
choices are scalars. With these, every trial of the study shows its architecture as plain
params (and in Optuna's dashboard), and an Optuna sampler (TPE) can draw architectures.
"""

from __future__ import annotations

import itertools
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SEARCHED_FIELDS, SearchSpace

NO_ATTENTION = "none"  # the categorical spelling of an empty attention_resolutions


def _join(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """One categorical per searched field, over every value the space allows."""
    mults = [
        list(m)
        for n in sorted(space.num_levels)
        for m in itertools.product(space.channel_mult_values, repeat=n)
        if not space.mult_non_decreasing or list(m) == sorted(m)
    ]
    attn = sorted(space.attention_resolutions, reverse=True)
    subsets = [
        _join(list(s)) or NO_ATTENTION
        for r in range(len(attn) + 1)
        for s in itertools.combinations(attn, r)
    ]
    choices: dict[str, list[Any]] = {
        "channel_mult": [_join(m) for m in mults],
        "attention_resolutions": subsets,
    }
    return {
        field: CategoricalDistribution(choices.get(field) or list(getattr(space, field)))
        for field in SEARCHED_FIELDS
    }


def encode(
    space: SearchSpace, arch: ArchConfig, dists: dict[str, BaseDistribution] | None = None
) -> dict[str, Any] | None:
    """The architecture as categorical params, or None if a value is not among the choices."""
    dists = dists or distributions(space)
    proposal = space.proposal_of(arch)
    params = {
        **proposal,
        "channel_mult": _join(proposal["channel_mult"]),
        "attention_resolutions": _join(proposal["attention_resolutions"]) or NO_ATTENTION,
    }
    for field, dist in dists.items():
        assert isinstance(dist, CategoricalDistribution)
        if params[field] not in dist.choices:
            return None
    return params


def decode(params: dict[str, Any]) -> dict[str, Any]:
    """Categorical params back to a proposal dict (for `SearchSpace.complete`)."""
    attn = params["attention_resolutions"]
    return {
        **params,
        "channel_mult": [int(v) for v in params["channel_mult"].split(",")],
        "attention_resolutions": [] if attn == NO_ATTENTION else [int(v) for v in attn.split(",")],
    }
