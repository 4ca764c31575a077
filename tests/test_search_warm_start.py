"""Warm start (`--warm-start RUN`): an earlier search's measured trials enter a new search's
memory and Optuna study without training; a different dataset is marked in the prompt; a
different space (or score) is refused by name, exit 2, before a run folder exists.

Searches run on the 12-architecture space of `screen_doubles`, scored from its table.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from rich.console import Console

from diffnas.cli.main import run as cli
from diffnas.gate.check import check_candidate
from diffnas.propose.base import ProposalContext
from diffnas.propose.baselines import TPEProposer
from diffnas.propose.prompt import PromptTemplates, round_messages
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space import params as arch_params
from diffnas.space.search_space import load_space
from screen_doubles import TableExecutor, make_table, write_space

QUIET = Console(quiet=True)


def search(space: Path, run_dir: Path, table: dict, **overrides: Any) -> tuple[dict, TableExecutor]:
    base: dict[str, Any] = dict(
        space=str(space), proposer="random", rounds=2, per_round=2, promote=0
    )
    executor = TableExecutor(table)
    cfg = SearchConfig(**{**base, **overrides})
    return SearchRun(cfg, run_dir, executor=executor, console=QUIET).run(), executor


@pytest.fixture()
def earlier(tmp_path: Path) -> tuple[Path, Path, dict]:
    """(space file, a finished 4-trial search of it, the table)."""
    space_file = write_space(tmp_path)
    table = make_table(load_space(space_file))
    run_dir = tmp_path / "earlier"
    search(space_file, run_dir, table, seed=1)
    return space_file, run_dir, table


def test_warm_start_adds_the_measured_trials_without_training(tmp_path: Path, earlier) -> None:
    space_file, earlier_dir, table = earlier
    before = study_mod.load_memory(study_mod.open_study(earlier_dir))
    assert [t.status for t in before] == ["complete"] * 4
    run_dir = tmp_path / "warm"
    # screening from round 1: the GP has the 4 imported trials to learn from already
    summary, executor = search(
        space_file, run_dir, table, seed=2, rounds=1, warm_start=[str(earlier_dir)], screen=4
    )
    study = study_mod.open_study(run_dir)
    imported = [t for t in study.get_trials() if t.user_attrs.get("origin") == "warm-start"]
    assert len(imported) == 4 and all(t.state == TrialState.COMPLETE for t in imported)
    assert [t.value for t in imported] == [t.score for t in before]
    space = load_space(space_file)
    for t, old in zip(imported, before):
        assert t.user_attrs["round"] == -1
        assert t.user_attrs["warm_start"] == {
            "run": str(earlier_dir.resolve()), "trial": old.number, "data": "digits"
        }  # fmt: skip
        assert t.params == arch_params.encode(space, old.arch)  # Optuna's samplers see them
        assert "measured_on" not in t.user_attrs  # the same data
    # nothing imported was trained again; only this search's two candidates were
    assert len(executor.evaluated) == 2
    assert not set(executor.evaluated) & {t.arch.key() for t in before}
    assert summary["origins"] == {"random": 2} and summary["warm_start"] == 4
    assert summary["compute"]["cpu_hours"] == pytest.approx(2 / 3600, abs=1e-6)
    assert "GP on 4 measured trials" in summary_round_info(run_dir)
    # TPE builds its model from the same memory: the imported trials are in it
    memory = study_mod.load_memory(study)
    tpe_study = TPEProposer()._study(context(space, memory), arch_params.distributions(space), 0.0)
    assert len(tpe_study.trials) == 6
    # a resume imports nothing twice
    SearchRun(
        SearchConfig.model_validate_json((run_dir / "options.json").read_text()),
        run_dir, executor=TableExecutor(table), console=QUIET,
    ).run()  # fmt: skip
    assert len(study_mod.open_study(run_dir).get_trials()) == len(study.get_trials())


def summary_round_info(run_dir: Path) -> str:
    import json

    return json.loads((run_dir / "rounds" / "round-000.json").read_text())["screening"]["info"]


def context(space, memory) -> ProposalContext:
    return ProposalContext(
        space=space, memory=memory, round=0, num_rounds=1, k=2, rng=random.Random(0),
        check=lambda raw, accepted: check_candidate(raw, space, memory, accepted),
        task="Design a denoiser.",
    )  # fmt: skip


def test_trials_measured_on_other_data_are_marked_in_the_prompt(tmp_path: Path, earlier) -> None:
    space_file, earlier_dir, table = earlier
    run_dir = tmp_path / "other-data"
    search(space_file, run_dir, table, rounds=1, data_subset=100, warm_start=[str(earlier_dir)])
    memory = study_mod.load_memory(study_mod.open_study(run_dir))
    imported = [t for t in memory if t.warm_start]
    assert {t.measured_on for t in imported} == {"digits"}
    prompt = round_messages(context(load_space(space_file), memory), PromptTemplates())[1].content
    for t in imported:
        assert f"trial {t.number}: " in prompt
    assert prompt.count("(measured on digits)") == 4


def refuse(tmp_path: Path, monkeypatch, capsys, args: list[str]) -> str:
    runs = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", ["diffnas", "search", *args, "--runs", str(runs)])
    with pytest.raises(SystemExit) as exit_:
        cli()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert not runs.exists()  # refused before a run folder exists
    return " ".join(err.split())


def test_a_different_space_is_refused_by_name_with_the_fields_that_differ(
    tmp_path: Path, earlier, monkeypatch, capsys
) -> None:
    _, earlier_dir, _ = earlier
    other = write_space(tmp_path, name="wider", base_channels=[16, 32])
    err = refuse(
        tmp_path, monkeypatch, capsys,
        ["--space", str(other), "--proposer", "random", "--warm-start", str(earlier_dir)],
    )  # fmt: skip
    assert f"--warm-start {str(earlier_dir)!r} searched space 'micro-toy'" in err
    assert "this search space 'wider'" in err
    assert "base_channels ([16, 24] there, [16, 32] here)" in err
    # the same space under another name is the same space
    renamed = write_space(tmp_path, name="micro-copy")
    err = refuse(
        tmp_path, monkeypatch, capsys,
        ["--space", str(renamed), "--proposer", "random", "--warm-start", str(earlier_dir),
         "--metric", "kid"],
    )  # fmt: skip
    assert "ranked candidates by RFID[classifier], this search by KID[classifier]" in err
    err = refuse(tmp_path, monkeypatch, capsys, ["--warm-start", str(tmp_path / "nowhere")])
    assert "is not a folder" in err
