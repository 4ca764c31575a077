"""Architecture <-> Optuna params: each searched dimension is one categorical parameter.

Lists become strings ("1,2,2,2"; "" for no attention) because Optuna's categorical choices
are scalars. With these distributions an Optuna sampler (TPE, random) can draw an
architecture, and every trial in the study shows its architecture as plain params.
"""

from __future__ import annotations

import itertools
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SEARCHED_FIELDS, SearchSpace

LIST_FIELDS = ("channel_mult", "attention_resolutions")


def _join(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def _split(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """One categorical distribution per searched field, over every value the space allows."""
    mults: list[str] = []
    for levels in sorted(space.num_levels):
        for combo in itertools.product(space.channel_mult_values, repeat=levels):
            if not space.mult_non_decreasing or list(combo) == sorted(combo):
                mults.append(_join(list(combo)))
    attn = sorted(space.attention_resolutions, reverse=True)
    subsets = [
        _join(list(c)) for n in range(len(attn) + 1) for c in itertools.combinations(attn, n)
    ]
    dists: dict[str, BaseDistribution] = {
        "channel_mult": CategoricalDistribution(mults),
        "attention_resolutions": CategoricalDistribution(subsets),
    }
    for name in SEARCHED_FIELDS:
        if name not in LIST_FIELDS:
            dists[name] = CategoricalDistribution(list(getattr(space, name)))
    return {name: dists[name] for name in SEARCHED_FIELDS}


def encode(space: SearchSpace, arch: ArchConfig) -> dict[str, Any]:
    """Params of an architecture that lies in the space."""
    proposal = space.proposal_of(arch)
    params = dict(proposal)
    params["channel_mult"] = _join(proposal["channel_mult"])
    params["attention_resolutions"] = _join(sorted(proposal["attention_resolutions"], reverse=True))
    return params


def decode(params: dict[str, Any]) -> dict[str, Any]:
    """A raw proposal (for `SearchSpace.complete`) from params."""
    proposal = dict(params)
    for name in LIST_FIELDS:
        proposal[name] = _split(str(params[name]))
    return proposal
