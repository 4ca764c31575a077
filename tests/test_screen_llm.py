"""The LLM screener (structured predictions, repair, fallbacks) and the llm+gp trust schedule."""

from __future__ import annotations

import json

import pytest

from diffnas.gate.memory import TrialRecord
from diffnas.propose.llm import (
    LLMBackend,
    LLMBudgetExhausted,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
    make_backend,
)
from diffnas.propose.screen import Candidate, HybridScreener, LLMScreener, ScreenContext
from diffnas.propose.screen.gp import fit_posterior
from diffnas.propose.screen.hybrid import llm_trust, veto_level
from diffnas.propose.screen.llm import parse_predictions, prediction_schema
from test_screen_gp import SPACE as TOY
from test_screen_gp import distinct_archs, fake_cost, measured, objective


class Answers(LLMBackend):
    """Answers from a list; raises what is an exception instance in it."""

    model = endpoint = "scripted"

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return LLMResponse(text=str(answer), model="scripted")


def context(n: int = 3, memory_size: int = 4) -> ScreenContext:
    archs = distinct_archs(memory_size + n, 1)
    memory = measured(archs[:memory_size])
    memory.append(
        TrialRecord(
            number=memory_size, round=2, slot=0, proposer="random", status="screened-out",
            arch=archs[0], screen={"screener": "llm", "predicted": 7.25},
        )
    )  # fmt: skip
    memory[0].measured_on = "fashion-mnist"
    return ScreenContext(
        space=TOY, memory=memory, candidates=[Candidate(a, *fake_cost(a)) for a in archs[-n:]],
        k=1, seed=5, score_name="RFID[classifier]", task="Design a denoiser.",
    )  # fmt: skip


def scores(*values: float) -> str:
    return json.dumps({"scores": list(values)})


def test_one_request_with_the_schema_the_memory_and_each_candidate() -> None:
    backend = Answers(scores(3.0, 1.0, 2.0))
    ranking = LLMScreener(backend).rank(context())
    assert ranking.order == [1, 2, 0] and ranking.predicted == [3.0, 1.0, 2.0]
    (request,) = backend.requests
    assert request.json_schema == prediction_schema(3)
    assert request.temperature == 0.0 and request.seed == 5
    prompt = request.messages[-1].content
    assert "candidate 3: {" in prompt and "candidate 4" not in prompt
    assert "predicted rfid 7.25, not measured (screened out before training)" in prompt
    assert "(measured on fashion-mnist)" in prompt
    assert "exactly 3 numbers" in prompt


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ("the scores are 1, 2, 3", "holds no JSON object"),
        (scores(1.0, 2.0), "you sent 2 numbers, exactly 3 are needed"),
        (json.dumps({"scores": [1, "two", 3]}), "'two' is not of type 'number'"),
        ('{"scores": [1, NaN, 3]}', "candidate(s) [2] are not finite"),
    ],
)
def test_a_malformed_answer_gets_a_repair_turn_naming_the_fault(bad: str, said: str) -> None:
    backend = Answers(bad, scores(2.0, 3.0, 1.0))
    ranking = LLMScreener(backend).rank(context())
    assert ranking.order == [2, 0, 1]
    repair = backend.requests[1].messages
    assert repair[-2].content == bad and said in repair[-1].content
    assert "exactly 3 numbers" in repair[-1].content


def test_no_usable_answer_or_no_endpoint_keeps_the_proposer_order() -> None:
    spent = LLMScreener(Answers("?", "?", "?"), max_repairs=2).rank(context())
    assert spent.order == [0, 1, 2] and spent.predicted == [None] * 3
    assert "no usable prediction in 3 call(s)" in spent.info
    down = LLMScreener(Answers(LLMUnavailable("http://x", "HTTP 503", 5))).rank(context())
    assert down.order == [0, 1, 2] and "unavailable" in down.info
    with pytest.raises(LLMBudgetExhausted):  # a spent budget stops the search, as for proposals
        LLMScreener(Answers(LLMBudgetExhausted("token budget exhausted"))).rank(context())


def test_parse_refuses_huge_and_deep_answers_before_decoding() -> None:
    with pytest.raises(ValueError, match="nests deeper"):
        parse_predictions('{"scores": ' + "[" * 100 + "]" * 100 + "}", 1)
    with pytest.raises(ValueError, match="characters long"):
        parse_predictions(scores(*([1.0] * 30_000)), 30_000)


# ----- llm+gp: the trust schedule -----
def test_the_trust_schedule_shifts_from_the_llm_to_the_gp() -> None:
    assert llm_trust(0) == 1 and llm_trust(10) == 0.5
    assert veto_level(0) == 1.0  # no observation: the LLM is never overruled
    assert veto_level(3) == pytest.approx(0.55 + 0.45 * 10 / 13)
    assert veto_level(10) == pytest.approx(0.775)
    assert veto_level(1000) == pytest.approx(0.55, abs=0.01)


def toy_context(k: int, observations: int = 20) -> ScreenContext:
    archs = distinct_archs(observations + 6, 0)
    return ScreenContext(
        space=TOY, memory=measured(archs[:observations]),
        candidates=[Candidate(a, *fake_cost(a)) for a in archs[observations:]], k=k, seed=2,
    )  # fmt: skip


def test_the_gp_vetoes_what_the_llm_favours_when_it_is_sure_it_is_worse() -> None:
    ctx = toy_context(k=1)
    truth = [objective(c.arch) for c in ctx.candidates]
    worst_first = [-t for t in truth]  # an LLM that predicts the opposite of the truth
    posterior = fit_posterior(ctx)
    assert posterior is not None
    favourite = max(range(6), key=lambda i: truth[i])
    sure = max(posterior.prob_worse(favourite, j) for j in range(6) if j != favourite)
    assert sure >= veto_level(20)  # the GP (tau > 0.5 here) is sure the favourite is worse
    ranking = HybridScreener(LLMScreener(Answers(scores(*worst_first)))).rank(ctx)
    assert ranking.order[0] != favourite  # not trained in the one slot
    assert "vetoed by the GP" in ranking.note(favourite)
    assert ranking.predicted == worst_first  # the LLM's numbers are its predictions
    # with 2 observations there is no GP yet: the LLM is trusted fully, its favourite stands
    early = toy_context(k=1, observations=2)
    reversed_truth = [-objective(c.arch) for c in early.candidates]
    ranking = HybridScreener(LLMScreener(Answers(scores(*reversed_truth)))).rank(early)
    assert ranking.order[0] == min(range(6), key=lambda i: reversed_truth[i])
    assert "no veto: the GP needs 3 measured trials" in ranking.info


def test_vetoes_never_leave_a_slot_empty() -> None:
    ctx = toy_context(k=4)
    truth = [objective(c.arch) for c in ctx.candidates]
    ranking = HybridScreener(LLMScreener(Answers(scores(*[-t for t in truth])))).rank(ctx)
    assert sorted(ranking.order) == list(range(6))
    assert len(ranking.order[:4]) == 4


@pytest.mark.slow
def test_the_embedded_model_predicts_through_its_grammar() -> None:
    """SmolLM2-135M, held to the prediction schema by llama.cpp's grammar, answers numbers."""
    backend = make_backend("local")
    screener = LLMScreener(backend, max_repairs=1, max_tokens=120)
    values, info = screener.predict(context(n=3, memory_size=3))
    assert values is not None and len(values) == 3, info


def test_without_an_llm_answer_the_gp_ranks_alone() -> None:
    from diffnas.propose.screen import GPScreener

    ctx = toy_context(k=2)
    down = Answers(LLMUnavailable("http://x", "HTTP 503", 5))
    ranking = HybridScreener(LLMScreener(down)).rank(ctx)
    assert ranking.order == GPScreener().rank(ctx).order
    assert ranking.info.startswith("the LLM was unavailable (LLM endpoint http://x")
    assert ranking.info.endswith("the GP ranks alone (GP on 20 measured trials)")
