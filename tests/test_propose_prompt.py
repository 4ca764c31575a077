"""Prompts: the memory best-last with reasons, compaction, the ablation, user templates."""

from __future__ import annotations

import re

import pytest

from diffnas.errors import UserError
from diffnas.gate.memory import TrialRecord
from diffnas.propose.prompt import (
    MemoryLayout,
    PromptTemplates,
    memory_entries,
    repair_message,
    round_messages,
)
from diffnas.space.search_space import SEARCHED_FIELDS
from test_propose_conformance import SPACE, make_ctx, make_memory


def scored(number: int, score: float, arch_from: TrialRecord) -> TrialRecord:
    return TrialRecord(
        number=number,
        round=0,
        slot=number,
        proposer="diffnas",
        status="complete",
        arch=arch_from.arch,
        gmacs=0.05,
        params_m=0.8,
        score=score,
    )


@pytest.fixture(scope="module")
def base() -> list[TrialRecord]:
    return make_memory(8)


def user_prompt(ctx, **kwargs) -> str:
    return round_messages(ctx, PromptTemplates(), **kwargs)[1].content


def trial_numbers(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(r"trial (\d+):", line))]


def test_memory_lists_scores_best_last_with_cost(base) -> None:
    memory = [scored(0, 30.0, base[0]), scored(1, 10.0, base[1]), scored(2, 20.0, base[2])]
    lines = memory_entries(memory, SPACE, MemoryLayout(), "rfid")
    assert trial_numbers(lines) == [0, 2, 1]  # worst first, best last
    assert lines[-1].endswith("0.05 GMACs, 0.8 M params, rfid 10")
    assert '"channel_mult":' in lines[0]  # the architecture in the form the model answers


def test_rejected_and_failed_are_marked_with_their_reason(base) -> None:
    memory = [
        scored(0, 12.0, base[0]),
        TrialRecord(1, 0, 1, "diffnas", "rejected", raw={"base_channels": 7}, reason="bad field"),
        TrialRecord(2, 0, 2, "diffnas", "diverged", arch=base[2].arch, reason="loss was NaN"),
        TrialRecord(3, 0, 3, "diffnas", "running", arch=base[3].arch),
    ]
    lines = memory_entries(memory, SPACE, MemoryLayout(), "rfid")
    assert lines[0] == 'trial 1: {"base_channels": 7} -> REJECTED: bad field'
    assert lines[1].endswith("FAILED (diverged): loss was NaN")
    assert lines[2].endswith("being evaluated, no score yet")
    assert trial_numbers(lines)[-1] == 0  # the scored one stays last


def test_compaction_keeps_top_k_recent_and_a_summary(base) -> None:
    best = {3: 1.0, 10: 2.0, 17: 3.0}
    memory = [scored(i, best.get(i, 50.0 + i), base[i % 8]) for i in range(30)]
    memory[25] = TrialRecord(25, 6, 1, "diffnas", "rejected", arch=base[0].arch, reason="too big")
    layout = MemoryLayout(max_entries=10, top_k=3, recent=4)
    lines = memory_entries(memory, SPACE, layout, "rfid")
    assert trial_numbers(lines) == [29, 28, 27, 26, 17, 10, 3]  # worst first, best last
    assert lines[0] == (
        "(23 other candidate(s) left out: 22 evaluated with rfid 50 to 74; "
        "1 rejected, failed, pruned or pending; shown: the 3 best and the 4 latest)"
    )
    assert len(lines) == 8
    assert len(memory_entries(memory[:10], SPACE, layout, "rfid")) == 10  # short: not compacted


def test_round_prompt_holds_task_space_budget_reference_memory_and_k(base) -> None:
    ctx = make_ctx(base, k=3)
    messages = round_messages(ctx, PromptTemplates())
    assert [m.role for m in messages] == ["system", "user"]
    text = messages[1].content
    assert ctx.task in text and ctx.reference_line in text
    assert SPACE.describe() in text and "0.01 to 0.08 GMACs" in text
    assert "Search memory: 8 candidate(s)" in text and "trial 7:" in text
    assert "Propose 3 new architecture(s) for round 3 of 5" in text
    assert "do not repeat earlier designs" in text
    assert ", ".join(SEARCHED_FIELDS) in text
    assert "\n\n\n" not in text
    assert user_prompt(make_ctx(base, k=3)) == text  # nothing time-dependent


def test_first_round_says_the_memory_is_empty() -> None:
    assert "(none yet: this is the first round)" in user_prompt(make_ctx([]))


def test_no_memory_prompt_has_no_memory_section(base) -> None:
    text = user_prompt(make_ctx(base), with_memory=False)
    assert "Search memory" not in text and "trial " not in text
    assert SPACE.describe() in text and "Propose 3 new" in text


def test_user_template_overrides_ours(tmp_path, base) -> None:
    (tmp_path / "round.txt").write_text("CUSTOM k=$k round=$round\n$memory")
    ctx = make_ctx(base[:2])
    system, user = round_messages(ctx, PromptTemplates(tmp_path))
    assert user.content.startswith("CUSTOM k=3 round=3\nSearch memory: 2 candidate(s)")
    assert system.content == round_messages(ctx, PromptTemplates())[0].content  # ours kept


def test_bad_placeholder_names_the_file_and_allowed(tmp_path, base) -> None:
    (tmp_path / "system.txt").write_text("You cost $$1 per $model.")
    with pytest.raises(UserError, match=r"system\.txt.*'model'.*allowed: \$score_name"):
        round_messages(make_ctx(base), PromptTemplates(tmp_path))


def test_prompt_dir_must_be_a_folder(tmp_path) -> None:
    with pytest.raises(UserError, match="prompt_dir=.*not a directory"):
        PromptTemplates(tmp_path / "missing")


def test_repair_message_lists_problems_and_what_is_kept() -> None:
    message = repair_message(PromptTemplates(), ["candidate 2: too big"], kept=1, wanted=3)
    assert message.role == "user"
    assert "- candidate 2: too big" in message.content
    assert "1 candidate(s) from your earlier answers are accepted" in message.content
    assert "holding 2 corrected or new candidate(s)" in message.content
