"""Searches against a table (`--executor table:PATH`) on a hand-made table: deterministic per
seed, every recorded seed used, an unknown architecture refused at the gate, halving rungs and
promotion looked up, and protocols the table lacks refused before a run folder exists."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.errors import UserError
from diffnas.execute import make_executor
from diffnas.execute.job import EvalJob
from diffnas.execute.table import REFERENCE, Table
from diffnas.execute.table_executor import TableExecutor
from diffnas.gate.check import check_candidate
from diffnas.runs import read_json
from diffnas.space.arch import parse_arch
from tiny_tables import FOUR, FOUR_DATA, four_archs, make_table

runner = CliRunner()


def score(a: int, setting: str, seed: int) -> float:
    """Distinct everywhere: which row a lookup read shows in its value."""
    return 100.0 * (SETTINGS_ORDER.index(setting) + 1) + 10.0 * a + seed


SETTINGS_ORDER = ["s2-rfid-n8-s2", "s2-loss", "s4-rfid-n8-s2", "s4-loss", REFERENCE]


@pytest.fixture
def table(tmp_path) -> Table:
    return make_table(tmp_path / "four-digits", score, device_seconds=lambda a, s, k: 1000.0 + k)


def job(table: Table, arch_index: int, setting: str, seed: int, tmp_path: Path) -> EvalJob:
    s = table.setting(setting)
    arch = list(four_archs().values())[arch_index].arch
    return EvalJob(
        arch=arch, objective="ddpm", data=FOUR_DATA, spec=s.spec, recipe=s.recipe, seed=seed,
        workdir=str(tmp_path / f"{arch_index}-{setting}-{seed}"), cache_dir=str(tmp_path),
    )  # fmt: skip


def test_lookup_is_deterministic_per_seed_and_uses_every_recorded_seed(table, tmp_path) -> None:
    executor = make_executor(f"table:{table.stem}")
    assert isinstance(executor, TableExecutor)
    draws = {}
    for search_seed in range(40):
        for a in range(4):
            result = executor.run(job(table, a, "s4-rfid-n8-s2", search_seed, tmp_path / "x"))
            again = TableExecutor(Table.load(table.stem)).run(
                job(table, a, "s4-rfid-n8-s2", search_seed, tmp_path / "y")
            )
            assert result.score == again.score  # the same search seed, the same answer
            recorded = result.score - 100.0 * 3 - 10.0 * a
            assert recorded in (0.0, 1.0)  # one recorded seed's row, exactly
            assert result.device_s == 1000.0 + recorded  # and that row's cost
            assert result.train["table_seed"] == recorded
            draws[search_seed, a] = recorded
    # over many search seeds both recorded seeds come up, for each architecture
    for a in range(4):
        seen = [draws[s, a] for s in range(40)]
        assert 8 <= sum(seen) <= 32
    # the rung (2 steps of a 4-step run) and the reference come from the same recorded seed
    step = job(table, 2, "s4-rfid-n8-s2", 7, tmp_path / "z").model_copy(update={"max_steps": 2})
    rung = executor.run(step)
    assert rung.score == 100.0 * 1 + 20.0 + draws[7, 2]
    final = executor.run(job(table, 2, REFERENCE, 7, tmp_path / "z"))
    assert final.score == 100.0 * 5 + 20.0 + draws[7, 2]
    assert json.loads((tmp_path / "z" / f"2-{REFERENCE}-7" / "result.json").read_text())[
        "score"
    ] == pytest.approx(final.score)


def test_a_reference_with_more_seeds_is_read_at_the_proxies_seed(tmp_path) -> None:
    # the reference's extra seeds firm up its mean; a search's final lookup still reads the
    # training seed its proxy lookups read
    more = make_table(tmp_path / "more", score, reference_seeds=(0, 1, 2, 3))
    fewer = make_table(tmp_path / "fewer", score, reference_seeds=(5,))
    for search_seed in range(20):
        proxy = TableExecutor(more).run(job(more, 1, "s4-rfid-n8-s2", search_seed, tmp_path / "p"))
        final = TableExecutor(more).run(job(more, 1, REFERENCE, search_seed, tmp_path / "f"))
        assert final.train["table_seed"] == proxy.train["table_seed"] in (0, 1)
        alone = TableExecutor(fewer).run(job(fewer, 1, REFERENCE, search_seed, tmp_path / "a"))
        assert alone.train["table_seed"] == 5 and alone.score == 500.0 + 10.0 + 5


def test_an_architecture_not_in_the_table_is_refused_at_the_gate(table, tmp_path) -> None:
    executor = TableExecutor(table)
    outside = parse_arch(
        {"image_size": 16, "in_channels": 1, "base_channels": 16, "channel_mult": [1, 1],
         "num_res_blocks": 1, "attention_resolutions": [], "mid_attention": False,
         "norm_groups": 8}
    )  # fmt: skip
    space = FOUR.model_copy(update={"base_channels": [8, 16]})  # in this space, not the table
    verdict = check_candidate(space.proposal_of(outside), space, [], [], admit=executor.admits)
    assert not verdict.ok and "not in table 'four-digits'" in verdict.reason
    assert "4 architectures" in verdict.reason
    inside = list(four_archs().values())[0].arch
    assert check_candidate(space.proposal_of(inside), space, [], [], admit=executor.admits).ok
    # a job that got past the gate anyway fails with the reason, it is not made up
    j = job(table, 0, "s2-loss", 0, tmp_path).model_copy(update={"arch": outside})
    result = executor.run(j)
    assert result.status == "failed" and "not in table" in result.error


def write_space(tmp_path: Path) -> Path:
    path = tmp_path / "four.yaml"
    path.write_text(yaml.safe_dump(FOUR.model_dump(mode="json")))
    return path


SEARCH = [
    "search", "--proposer", "random", "--data", "digits", "--data-subset", "64",
    "--proxy-steps", "4", "--proxy-batch-size", "4", "--metric", "rfid", "--score-samples", "8",
    "--score-steps", "2", "--device", "cpu",
]  # fmt: skip


def test_a_search_against_the_table_runs_halving_and_promotion_by_lookup(table, tmp_path) -> None:
    runs = tmp_path / "runs"
    args = [*SEARCH, "--space", str(write_space(tmp_path)), "--executor", f"table:{table.stem}"]
    args += ["--rounds", "2", "--per-round", "2", "--halving-rungs", "2", "--halving-eta", "2"]
    result = runner.invoke(app, [*args, "--runs", str(runs), "--seed", "3"])
    assert result.exit_code == 0, result.output
    run_dir = next(runs.iterdir())
    index = {a: i for i, a in enumerate(four_archs())}
    summary = read_json(run_dir / "summary.json")
    final = summary["final"][0]
    trial_dir = run_dir / "trials" / f"{final['trial']:05d}"
    job_file = read_json(trial_dir / "job.json")
    arch_id = parse_arch(job_file["arch"]).arch_hash()
    recorded = TableExecutor(table).run(
        job(table, index[arch_id], REFERENCE, 3, tmp_path / "check")
    )
    assert final["score"] == recorded.score  # promotion = the table's reference row
    assert final["device_s"] == recorded.device_s
    options = read_json(run_dir / "options.json")
    assert options["final"]["recipe_overrides"]["steps"] == 4  # the table's reference
    # every trained trial's score is a row of the table for its architecture
    for trial in (run_dir / "trials").iterdir():
        if (trial / "result.json").is_file():
            value = read_json(trial / "result.json")["score"]
            a = index[parse_arch(read_json(trial / "job.json")["arch"]).arch_hash()]
            assert round(value) % 100 - 10 * a in (0, 1)
    shown = runner.invoke(app, ["status", str(run_dir)])
    assert shown.exit_code == 0 and "RFID[classifier]" in shown.output


def test_protocols_the_table_lacks_are_refused_before_a_run_folder(table, tmp_path) -> None:
    runs = tmp_path / "runs"
    base = [*SEARCH, "--space", str(write_space(tmp_path)), "--runs", str(runs)]
    executor = ["--executor", f"table:{table.stem}"]
    for extra, fragment in (
        (["--score-samples", "9"], "has no setting for the search's proxy protocol"),
        (["--halving-rungs", "3", "--halving-eta", "2"], "successive-halving rung: 1 steps"),
        (["--final-steps", "9"], "drop --final-steps"),
        (["--data-subset", "65"], "is not the data of table"),
    ):
        result = runner.invoke(app, [*base, *executor, *extra])
        assert isinstance(result.exception, UserError), (extra, result.output)
        assert fragment in str(result.exception), (extra, str(result.exception))
        if "proxy protocol" in fragment:  # the refusal lists what the table has
            assert "s4-rfid-n8-s2 (4 steps, RFID[classifier] N=8 S=2, batch 4)" in str(
                result.exception
            )
    tiny = runner.invoke(app, [*SEARCH, "--space", "tiny", *executor, "--runs", str(runs)])
    assert "is not the space of table" in str(tiny.exception)
    missing = runner.invoke(app, [*base, "--executor", "table:no-such-table"])
    assert "neither a bundled table" in str(missing.exception)
    assert not runs.exists()


def test_lookups_reproduce_a_search_exactly(table, tmp_path) -> None:
    """Two searches with the same seed get the same answers (same proposals, same lookups)."""
    args = [*SEARCH, "--space", str(write_space(tmp_path)), "--executor", f"table:{table.stem}"]
    args += ["--rounds", "2", "--per-round", "2", "--seed", str(random.Random(0).randrange(99))]
    outputs = []
    for name in ("a", "b"):
        result = runner.invoke(app, [*args, "--runs", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        run_dir = next((tmp_path / name).iterdir())
        outputs.append(read_json(run_dir / "summary.json")["best_score"])
    assert outputs[0] == outputs[1]
