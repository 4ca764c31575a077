"""Architectures as numeric vectors, for the GP screener.

One row per architecture, one column per feature of its searched fields, in this order:

| feature | value |
| --- | --- |
| `log2_base_channels` | log2 of `base_channels` |
| `levels` | number of resolution levels (`len(channel_mult)`) |
| `mult_mean`, `mult_last` | mean and deepest channel multiplier |
| `res_blocks` | `num_res_blocks` |
| `attention_at_R` | 1 if attention is placed at resolution R, else 0 (one column per R the space allows) |
| `mid_attention`, `scale_shift_norm`, `resblock_updown` | 0 or 1 |
| `log2_head_channels`, `log2_norm_groups` | log2 of the field |
| `dropout` | the dropout rate |

Widths are on a log scale because their effect on cost and capacity is multiplicative.
`encode` drops the columns that are constant over the rows it is given (a field with one
allowed value tells nothing) and scales every other column to [0, 1] over those rows, so one
length-scale prior fits all. The measured cost is left out: it is a function of these fields,
and on a toy objective that does not depend on it two more columns only made the fit worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


def feature_names(space: SearchSpace) -> list[str]:
    attention = [f"attention_at_{r}" for r in sorted(space.attention_resolutions, reverse=True)]
    return [
        "log2_base_channels", "levels", "mult_mean", "mult_last", "res_blocks", *attention,
        "mid_attention", "scale_shift_norm", "resblock_updown", "log2_head_channels",
        "log2_norm_groups", "dropout",
    ]  # fmt: skip


def arch_features(space: SearchSpace, arch: ArchConfig) -> list[float]:
    """The raw features of one architecture, in `feature_names` order."""
    mult = list(arch.channel_mult)
    # a space always fixes head_channels; an architecture given by head count has base/heads
    head = arch.head_channels or max(1, arch.base_channels // (arch.num_heads or 1))
    attention = [
        float(r in arch.attention_resolutions)
        for r in sorted(space.attention_resolutions, reverse=True)
    ]
    return [
        math.log2(arch.base_channels), float(len(mult)), sum(mult) / len(mult), float(mult[-1]),
        float(arch.num_res_blocks), *attention, float(arch.mid_attention),
        float(arch.scale_shift_norm), float(arch.resblock_updown), math.log2(head),
        math.log2(arch.norm_groups), float(arch.dropout),
    ]  # fmt: skip


def encode(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """The architectures as a matrix: constant columns dropped, the others scaled to [0, 1]."""
    raw = np.array([arch_features(space, arch) for arch in archs], dtype=float)
    if raw.size == 0:
        return raw.reshape(len(archs), 0)
    low, high = raw.min(axis=0), raw.max(axis=0)
    varying = high > low
    return (raw[:, varying] - low[varying]) / (high[varying] - low[varying])
