"""`diffnas cost --latency`: measured once, then from the cache; its options refused by name."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from diffnas.cli.main import app

runner = CliRunner()


def test_cost_latency_measures_then_reads_the_cache(tmp_path) -> None:
    args = [
        "cost", "tiny-digits", "--latency", "--device", "cpu", "--threads", "1", "--runs", "2",
        "--warmup", "0", "--sampler-steps", "20", "--cache-dir", str(tmp_path), "--json",
    ]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    measured = json.loads(first.stdout)["latency"]
    assert measured["cached"] is False
    assert measured["settings"] == {
        "device": "cpu", "dtype": "fp32", "batch": 1, "channels_last": False, "compile": False,
        "threads": 1, "warmup": 0, "runs": 2,
    }  # fmt: skip
    assert len(measured["runs_ms"]) == 2
    assert measured["sampling_s"] == pytest.approx(measured["ms"] * 20 / 1000, rel=1e-3)
    assert len(list(tmp_path.glob("*.json"))) == 1
    second = json.loads(runner.invoke(app, args).stdout)["latency"]
    assert second["cached"] is True and second["ms"] == measured["ms"]
    # another batch is another measurement
    third = runner.invoke(app, [*args, "--batch", "2"])
    assert json.loads(third.stdout)["latency"]["cached"] is False
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_cost_latency_table_names_what_was_measured(tmp_path) -> None:
    result = runner.invoke(
        app,
        ["cost", "tiny-digits", "--latency", "--device", "cpu", "--threads", "1", "--runs", "1",
         "--warmup", "0", "--no-cache"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ms/pass" in result.stdout and "50 steps" in result.stdout
    text = " ".join(result.stdout.split())
    assert "median of 1 passes after 0 warm-up, batch 1, cpu, fp32, 1 thread" in text
    assert "not cached" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cpu"], "--device only apply with --latency"),
        (["--latency", "--dtype", "fp64"], "--dtype 'fp64'"),
        (["--latency", "--device", "tpu"], "--device 'tpu' is unknown"),
    ],
)
def test_cost_latency_options_are_checked(args, message) -> None:
    result = runner.invoke(app, ["cost", "tiny-digits", *args])
    assert result.exit_code != 0
    assert message in str(result.exception)
