"""Test doubles for screening and warm start: a 12-architecture space with a hand-made table of
true scores, an executor that looks the scores up (no training), and a stub screener.

The table is made here, not by the code under test: a seeded shuffle of the scores 1..12 over
the space's architectures, so the true order is known and unrelated to any formula a screener
could find by accident.
"""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import yaml

from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.propose.screen import Ranking, ScreenContext, Screener
from diffnas.space import params as arch_params
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace, load_space

# The tiny space cut down to 2 base widths x 3 multiplier pairs x 2 block counts, all in budget.
MICRO = {
    **load_space("tiny").model_dump(),
    "name": "micro-toy",
    "base_channels": [16, 24],
    "num_levels": [2],
    "channel_mult_values": [1, 2],
    "num_res_blocks": [1, 2],
    "attention_resolutions": [],
    "mid_attention": [True],
    "head_channels": [8],
    "dropout": [0.0],
    "scale_shift_norm": [False],
    "resblock_updown": [False],
    "budget": {"max_gmacs": 0.2, "min_gmacs": 0.001},
}


def write_space(folder: Path, **changes: object) -> Path:
    """The micro space (with `changes`) as a YAML file in `folder`."""
    path = folder / f"{changes.get('name', 'micro-toy')}.yaml"
    path.write_text(yaml.safe_dump({**MICRO, **changes}))
    return path


def all_archs(space: SearchSpace) -> list[ArchConfig]:
    """Every architecture of a small space, by enumerating its categorical params."""
    dists = arch_params.distributions(space)
    found = []
    for combo in itertools.product(*(d.choices for d in dists.values())):  # type: ignore[attr-defined]
        found.append(space.complete(arch_params.decode(dict(zip(dists, combo)))))
    return found


def make_table(space: SearchSpace, seed: int = 7) -> dict[str, float]:
    """arch key -> true score: 1.0 (the best) to 12.0, shuffled over the space."""
    archs = all_archs(space)
    scores = [float(i + 1) for i in range(len(archs))]
    random.Random(seed).shuffle(scores)
    return {a.key(): s for a, s in zip(archs, scores)}


class TableExecutor(Executor):
    """Answers each evaluation with the table's score, instantly; counts what it evaluated."""

    name = "table-double"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.evaluated: list[str] = []  # arch keys, in evaluation order
        self._lock = threading.Lock()

    def _run(self, job: EvalJob) -> EvalResult:
        with self._lock:
            self.evaluated.append(job.arch.key())
        return EvalResult(status="complete", score=self.table[job.arch.key()], device_s=1.0)


class StubScreener(Screener):
    """Predicts the table's true score of every candidate."""

    name = "stub"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls = 0

    def rank(self, ctx: ScreenContext) -> Ranking:
        self.calls += 1
        predicted = [self.table[c.arch.key()] for c in ctx.candidates]
        order = sorted(range(len(predicted)), key=lambda i: predicted[i])
        return Ranking(order=order, predicted=list(predicted), notes=["table"] * len(predicted))
