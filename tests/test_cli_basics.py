"""The CLI's contract: tables, JSON, and exit code 2 with one paragraph for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from diffnas.cli.main import app

runner = CliRunner()


def diffnas(*args: str) -> subprocess.CompletedProcess:
    """Run the real entry point in a subprocess (the way a user's shell does)."""
    return subprocess.run(
        [sys.executable, "-m", "diffnas", *args], capture_output=True, text=True, timeout=120
    )


def test_cost_reference_json() -> None:
    result = runner.invoke(app, ["cost", "ddpm-cifar10", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["params_m"] == pytest.approx(35.75, abs=0.01)
    assert data["gmacs"] == pytest.approx(6.22, abs=0.01)
    assert data["flops"] == 2 * data["macs"]


def test_cost_table_of_all_references_and_budget() -> None:
    result = runner.invoke(app, ["cost", "--space", "cifar10-iddpm", "iddpm-cifar10"])
    assert result.exit_code == 0, result.output
    assert "52.5 M" in result.output and "within" in result.output


# Two commands run in one child through the console script's function (one torch import, not
# two): stdout is a pipe in both, as in a log; a line of dashes separates their outputs.
TWO_COMMANDS = """
import sys
from diffnas.cli.main import run
for args in (sys.argv[1:3], sys.argv[3:]):
    sys.argv = ["diffnas", *args]
    try:
        run()
    except SystemExit as exit_:
        print(f"----- exit {exit_.code}", flush=True)
"""


def test_off_a_terminal_nothing_wraps_at_80_columns(tmp_path) -> None:
    """In a log (stdout a pipe) the cost table's title and a space's long lines stay whole."""
    title = "Cost of one forward pass per image (FLOPs = 2 x MACs)"
    space = tmp_path / "s.yaml"
    long = "a description " + "with [bold]markup[/] and $math$ " * 5
    space.write_text(
        "name: s\nimage_size: 16\nin_channels: 1\nbase_channels: [16]\nnum_levels: [2]\n"
        "channel_mult_values: [1, 2]\nnum_res_blocks: [1]\nhead_channels: [16]\n"
        f"norm_groups: [8]\ndescription: '{long}'\nbudget: {{max_gmacs: 1}}\n"
    )
    both = subprocess.run(
        [sys.executable, "-c", TWO_COMMANDS, "cost", "tiny-digits", "space", "show", str(space)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    cost, shown, end = both.stdout.split("----- exit ")
    assert both.returncode == 0 and title in cost.splitlines()[0], both.stderr
    assert shown.startswith("0\n") and end == "0\n", both.stderr
    assert f"Search space 's': {long.rstrip()}" in shown.splitlines()  # one line


def test_space_show_sample_and_schema() -> None:
    shown = runner.invoke(app, ["space", "show", "tiny"])
    assert (
        shown.exit_code == 0
        and "base_channels" in shown.output
        and "reference tiny-digits" in shown.output
    )
    sampled = runner.invoke(app, ["space", "sample", "tiny", "-n", "3", "--json"])
    assert sampled.exit_code == 0
    assert len([json.loads(line) for line in sampled.output.splitlines()]) == 3
    schema = runner.invoke(app, ["space", "show", "tiny", "--schema"])
    assert json.loads(schema.output)["additionalProperties"] is False


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"base_channels": 100, "channel_mult": [1, 2], "num_res_blocks": 2}', "norm_groups"),
        ('{"base_channels": 64, "channel_mult": [1, 2], "num_res_blocks": 2, "wings": 2}', "wings"),
        ('{"base_channels": 64, "channel_mult": [1, 2', "not valid JSON"),
    ],
)
def test_bad_architecture_exits_2_with_one_paragraph(tmp_path, content: str, field: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    proc = diffnas("cost", str(path))
    assert proc.returncode == 2
    assert field in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().count("\n") == 0


def test_out_of_space_and_unknown_preset_exit_2(tmp_path) -> None:
    path = tmp_path / "big.json"
    path.write_text(
        '{"base_channels": 64, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 9, "head_channels": 64}'
    )
    proc = diffnas("cost", str(path), "--space", "cifar10-ddpm")
    assert proc.returncode == 2 and "num_res_blocks" in proc.stderr and "allowed" in proc.stderr
    # a UserError through `python -m diffnas`: one paragraph, no traceback, nothing on stdout
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = diffnas("cost", "resnet50")
    assert proc.returncode == 2 and "ddpm-cifar10" in proc.stderr


def test_version_and_help() -> None:
    proc = diffnas("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("diffnas ")
    assert runner.invoke(app, ["cost", "--help"]).exit_code == 0


def test_no_cli_module_imports_another_but_main() -> None:
    """The CLI only parses, calls its layer and prints: a command shares nothing with another
    command (what two commands need lives in a lower layer) but the flags declared once in
    options.py, and main.py only registers them."""
    import ast
    from pathlib import Path

    import diffnas.cli

    cli_dir = Path(diffnas.cli.__file__).parent
    offenders = []
    for path in sorted(cli_dir.glob("*.py")):
        if path.name in ("main.py", "__init__.py", "options.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            shared = ("diffnas.cli", "diffnas.cli.options")  # `from diffnas.cli import options`
            if any(
                (n == "diffnas.cli" or n.startswith("diffnas.cli.")) and n not in shared
                for n in names
            ) or (isinstance(node, ast.ImportFrom) and node.level > 0):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_defaults_a_help_text_states_are_the_defaults() -> None:
    """The CLI cannot import the records that hold these defaults (they import torch), so its
    help states them in words; this holds the words to the records."""
    from typer.main import get_command

    from diffnas.experiments.study import StudyConfig
    from diffnas.train.recipe import TrainRecipe

    study = StudyConfig()
    reference = study.reference.train_recipe("ddpm", "digits", device_type="cpu")
    proxy = study.proxy.train_recipe("ddpm", "digits", device_type="cpu")
    search_proxy = TrainRecipe.proxy()
    stated = {
        ("tabulate", "proxy_steps"): ",".join(map(str, study.proxy_steps)),
        ("tabulate", "proxy_batch_size"): str(proxy.batch_size),
        ("tabulate", "score_samples"): ",".join(map(str, study.score_samples)),
        ("tabulate", "score_steps"): ",".join(map(str, study.score_steps)),
        ("tabulate", "reference_steps"): str(reference.steps),
        ("tabulate", "reference_batch_size"): str(reference.batch_size),
        ("tabulate", "reference_samples"): str(study.reference.score.num_samples),
        ("tabulate", "reference_score_steps"): str(study.reference.score.steps),
        ("tabulate", "seeds"): str(study.seeds),
        ("search", "proxy_steps"): f"{search_proxy.steps // 1000}k",
        ("search", "proxy_batch_size"): str(search_proxy.batch_size),
        ("compare", "proxy_steps"): f"{search_proxy.steps // 1000}k",
        ("compare", "proxy_batch_size"): str(search_proxy.batch_size),
    }
    group = get_command(app)
    for (command, name), value in stated.items():
        params = {p.name: p for p in group.commands[command].params}
        assert f"(default {value})" in params[name].help, (command, name, params[name].help)
