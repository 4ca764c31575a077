"""The one conformance suite every screener passes (as Optuna runs one suite over its samplers).

Each screener in `SCREENERS` - the three of `--screener`, their LLM answering from a scripted
backend - must, on the same contexts:
- rank every candidate exactly once, with one prediction (a finite number or None) each;
- answer the same context the same way (resume and replay depend on it);
- work with an empty memory, one candidate, and as many slots as candidates;
- not learn from predictions: screened-out, rejected, failed and pruned records in the memory
  do not change its ranking;
- leave the memory and the candidates as they were.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable

import pytest

from diffnas.gate.memory import TrialRecord
from diffnas.propose.llm import LLMBackend, LLMRequest, LLMResponse
from diffnas.propose.screen import (
    Candidate,
    GPScreener,
    HybridScreener,
    LLMScreener,
    ScreenContext,
    Screener,
)
from test_screen_gp import SPACE, distinct_archs, fake_cost, measured


class PredictingBackend(LLMBackend):
    """A scripted model: predicts base_channels / num_res_blocks of each candidate line."""

    model = endpoint = "scripted"

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        scores = []
        for line in request.messages[-1].content.splitlines():
            if line.startswith("candidate "):
                arch = json.loads(line.split(": ", 1)[1].split(" -> ")[0])
                scores.append(arch["base_channels"] / arch["num_res_blocks"])
        return LLMResponse(text=json.dumps({"scores": scores}), model="scripted")


SCREENERS: dict[str, Callable[[], Screener]] = {
    "gp": GPScreener,
    "llm": lambda: LLMScreener(PredictingBackend()),
    "llm+gp": lambda: HybridScreener(LLMScreener(PredictingBackend())),
}


def context(memory_size: int = 12, candidates: int = 6, k: int = 2, seed: int = 0) -> ScreenContext:
    archs = distinct_archs(memory_size + candidates, seed)
    return ScreenContext(
        space=SPACE,
        memory=measured(archs[:memory_size]),
        candidates=[Candidate(a, *fake_cost(a)) for a in archs[memory_size:]],
        k=k,
        seed=11,
        score_name="RFID[classifier]",
        task="Design the UNet denoiser of a diffusion model for digits images.",
    )


def unmeasured(ctx: ScreenContext) -> list[TrialRecord]:
    """Records that are not measurements, some with absurd values a screener must not learn."""
    archs = distinct_archs(40, 99)[-4:]
    statuses = ["screened-out", "rejected", "diverged", "pruned"]
    out = []
    for i, (arch, status) in enumerate(zip(archs, statuses)):
        number = len(ctx.memory) + i
        out.append(
            TrialRecord(
                number=number, round=9, slot=i, proposer="random", status=status, arch=arch,
                score=-1e6 if status == "pruned" else None,
                screen={"screener": "gp", "predicted": -1e6, "rank": 1, "selected": False}
                if status == "screened-out" else {"fidelity": {"steps": 1, "of": 10}},
            )
        )  # fmt: skip
    return out


def check_ranking(ctx: ScreenContext, screener: Screener) -> None:
    ranking = screener.rank(ctx)
    n = len(ctx.candidates)
    assert sorted(ranking.order) == list(range(n))
    assert len(ranking.predicted) == n
    assert all(p is None or math.isfinite(p) for p in ranking.predicted)
    assert len(ranking.notes) in (0, n)


@pytest.mark.parametrize("name", SCREENERS)
def test_every_candidate_is_ranked_once_with_one_prediction(name: str) -> None:
    for ctx in (context(), context(memory_size=0), context(candidates=1, k=1), context(k=6)):
        check_ranking(ctx, SCREENERS[name]())


@pytest.mark.parametrize("name", SCREENERS)
def test_the_same_context_gets_the_same_answer(name: str) -> None:
    first, second = SCREENERS[name]().rank(context()), SCREENERS[name]().rank(context())
    assert (first.order, first.predicted, first.info) == (
        second.order,
        second.predicted,
        second.info,
    )


@pytest.mark.parametrize("name", SCREENERS)
def test_predictions_and_failures_are_not_learnt_as_measurements(name: str) -> None:
    ctx = context()
    plain = SCREENERS[name]().rank(ctx)
    ctx.memory = ctx.memory + unmeasured(ctx)
    noisy = SCREENERS[name]().rank(ctx)
    assert noisy.order == plain.order
    assert noisy.predicted == pytest.approx(plain.predicted)


@pytest.mark.parametrize("name", SCREENERS)
def test_memory_and_candidates_are_left_as_they_were(name: str) -> None:
    ctx = context()
    memory, candidates = copy.deepcopy(ctx.memory), list(ctx.candidates)
    SCREENERS[name]().rank(ctx)
    assert ctx.memory == memory and ctx.candidates == candidates


@pytest.mark.parametrize("name", SCREENERS)
def test_with_a_measured_memory_every_screener_predicts(name: str) -> None:
    ranking = SCREENERS[name]().rank(context(memory_size=12, seed=4))
    assert all(p is not None for p in ranking.predicted)
