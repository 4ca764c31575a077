"""`make_proposer`: names, options and the errors a user sees."""

from __future__ import annotations

import pytest

from diffnas.errors import UserError
from diffnas.propose.baselines import (
    EvolutionProposer,
    NSGAIIProposer,
    RandomProposer,
    TPEProposer,
)
from diffnas.propose.llm import LLMBackend, LLMRequest, LLMResponse
from diffnas.propose.llm_proposer import LLMProposer
from diffnas.propose.registry import PROPOSERS, make_proposer


class Silent(LLMBackend):
    """Never called: construction only."""

    def complete(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError("not called")


def test_every_name_builds_its_proposer() -> None:
    assert PROPOSERS == ("diffnas", "llm-no-memory", "random", "tpe", "evolution", "nsga2")
    kinds = {name: type(make_proposer(name, llm_backend=Silent())) for name in PROPOSERS}
    assert kinds == {
        "diffnas": LLMProposer,
        "llm-no-memory": LLMProposer,
        "random": RandomProposer,
        "tpe": TPEProposer,
        "evolution": EvolutionProposer,
        "nsga2": NSGAIIProposer,
    }
    for name in PROPOSERS:
        assert make_proposer(name, llm_backend=Silent()).name == name


def test_llm_options_reach_the_proposer(tmp_path) -> None:
    proposer = make_proposer(
        "llm-no-memory",
        llm_backend=Silent(),
        prompt_dir=tmp_path,
        max_repairs=1,
        temperature=0.2,
        max_tokens=300,
    )
    assert isinstance(proposer, LLMProposer)
    assert not proposer.with_memory
    assert (proposer.max_repairs, proposer.temperature, proposer.max_tokens) == (1, 0.2, 300)
    assert make_proposer("diffnas", llm_backend=Silent()).with_memory


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(UserError, match="proposer='bayes' is unknown; allowed: diffnas, llm-no"):
        make_proposer("bayes")


@pytest.mark.parametrize("name", ["diffnas", "llm-no-memory"])
def test_llm_proposer_needs_a_backend(name: str) -> None:
    with pytest.raises(UserError, match=f"proposer '{name}' asks a language model"):
        make_proposer(name)


def test_unknown_option_names_the_allowed_ones() -> None:
    with pytest.raises(UserError, match="no option 'population'; allowed: population_size"):
        make_proposer("evolution", population=3)
    with pytest.raises(UserError, match="max_repairs=-1 must be >= 0"):
        make_proposer("diffnas", llm_backend=Silent(), max_repairs=-1)
