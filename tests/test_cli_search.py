"""`diffnas search --dry-run`, bad options, and `diffnas status` on a finished run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.runs import OPTIONS_FILE
from diffnas.search.config import SearchConfig
from diffnas.search.plan import resumed_config

runner = CliRunner()


def test_dry_run_prints_plan_and_creates_nothing(tmp_path) -> None:
    result = runner.invoke(
        app, ["search", "--dry-run", "--proxy-steps", "300", "--runs", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert "proxy train + score" in result.output and "PFLOPs" in result.output
    assert not (tmp_path / "runs").exists()


def test_recipe_set_reaches_both_recipes() -> None:
    result = runner.invoke(
        app, ["search", "--dry-run", "--set", "bf16_cpu=true", "--proxy-steps", "50"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count('"bf16_cpu": true') == 2
    result = runner.invoke(app, ["search", "--dry-run", "--set", "wings=2"])
    assert "unknown key 'wings'" in str(result.exception)


def test_bad_options_are_user_errors(tmp_path) -> None:
    result = runner.invoke(app, ["search", "--rounds", "0", "--runs", str(tmp_path)])
    assert result.exit_code == 2 and "--rounds" in result.output  # typer's range, 1..10000
    assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["search", "--dry-run", "--proposer", "genius"])
    assert "--proposer 'genius' is unknown; allowed: diffnas" in str(result.exception)
    result = runner.invoke(app, ["search", "--dry-run", "--llm", "gpt4"])
    assert "llm='gpt4' is not a backend spec" in str(result.exception)
    result = runner.invoke(app, ["search", "--resume", str(tmp_path / "nope")])
    assert "no options.json" in str(result.exception)


def test_random_search_then_status(tmp_path) -> None:
    runs = tmp_path / "runs"
    args = ["search", "--proposer", "random", "--rounds", "1", "--per-round", "2", "--data-subset", "100",
            "--proxy-steps", "4", "--proxy-batch-size", "4", "--score-samples", "8", "--score-steps", "2",
            "--promote", "1", "--final-recipe", "proxy", "--final-steps", "4", "--final-batch-size", "4",
            "--fid-samples", "8", "--fid-steps", "2", "--device", "cpu", "--runs", str(runs)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = next(runs.glob("00000-search-tiny-random"))
    for name in (
        "options.json",
        "env.json",
        "study.db",
        "summary.json",
        "events.jsonl",
        "rounds/round-000.json",
    ):
        assert (run_dir / name).exists(), name
    status = runner.invoke(app, ["status", str(run_dir)])
    assert status.exit_code == 0
    assert "complete" in status.output and "final: trial" in status.output
    # resuming a finished search changes nothing and accepts --dry-run, but no new options
    resumed = runner.invoke(app, ["search", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert runner.invoke(app, ["search", "--resume", str(run_dir), "--dry-run"]).exit_code == 0
    refused = runner.invoke(app, ["search", "--resume", str(run_dir), "--rounds", "3"])
    assert "drop --rounds" in str(refused.exception)
    assert sorted(p.name for p in runs.iterdir()) == ["00000-search-tiny-random", "cache"]


def test_a_search_saved_before_llm_mode_resumes_in_full_mode(tmp_path) -> None:
    saved = SearchConfig(llm="local").model_dump(mode="json")
    (tmp_path / OPTIONS_FILE).write_text(json.dumps(saved))
    assert resumed_config(tmp_path).llm_mode == "auto"  # recorded: kept as it is
    del saved["llm_mode"]
    (tmp_path / OPTIONS_FILE).write_text(json.dumps(saved))
    assert resumed_config(tmp_path).llm_mode == "full"  # the only mode such a search knew
