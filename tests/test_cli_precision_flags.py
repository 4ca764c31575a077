"""`--bf16-cpu/--no-bf16-cpu` on `diffnas train` and `diffnas search`; the default follows the CPU."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import cpuinfo_samples
from cpuinfo_samples import use_cpuinfo
from diffnas.cli.main import app

runner = CliRunner()


def _train_recipe(*flags: str) -> dict:
    result = runner.invoke(
        app, ["train", "tiny-digits", "--device", "cpu", "--steps", "10", "--dry-run", *flags]
    )
    assert result.exit_code == 0, result.output
    start = result.output.index("{")
    options, _ = json.JSONDecoder().raw_decode(result.output[start:])
    return options["recipe"]


def test_train_default_and_flags(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.ZEN4)
    assert _train_recipe()["bf16_cpu"] is True
    assert _train_recipe()["channels_last"] is False
    assert _train_recipe("--no-bf16-cpu")["bf16_cpu"] is False
    assert _train_recipe("--set", "bf16_cpu=false")["bf16_cpu"] is False
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.CASCADE_LAKE)
    assert _train_recipe()["bf16_cpu"] is False
    assert _train_recipe("--bf16-cpu")["bf16_cpu"] is True


def test_search_flag_reaches_both_recipes() -> None:
    result = runner.invoke(app, ["search", "--dry-run", "--no-bf16-cpu", "--proxy-steps", "50"])
    assert result.exit_code == 0, result.output
    assert result.output.count('"bf16_cpu": false') == 2
    result = runner.invoke(app, ["search", "--dry-run", "--proxy-steps", "50"])
    assert '"bf16_cpu"' not in result.output  # unset: resolved per evaluation by its device
