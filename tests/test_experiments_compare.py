"""`diffnas compare` at tiny size: random, TPE and evolution with 3 seeds each, the plot and
table, the aggregates against each search's own summary, resume, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.experiments import compare as cmp
from diffnas.runs import read_json

runner = CliRunner()
PROPOSERS = ("random", "tpe", "evolution")
# 12 small nets, all in budget: proposers draw few times and each candidate trains fast
SPACE = """name: micro
image_size: 16
in_channels: 1
objective: ddpm
base_channels: [8, 16]
num_levels: [2]
channel_mult_values: [1, 2]
num_res_blocks: [1]
attention_resolutions: []
mid_attention: [false]
head_channels: [8]
dropout: [0.0]
scale_shift_norm: [true, false]
resblock_updown: [false]
norm_groups: [8]
budget: {max_gmacs: 1.0, min_gmacs: 0.0}
"""
TINY = [
    "--proposers", ",".join(PROPOSERS), "--seeds", "3", "--data", "digits",
    "--data-subset", "200", "--rounds", "2", "--per-round", "1", "--proxy-steps", "3",
    "--proxy-batch-size", "8", "--score-samples", "8", "--score-steps", "2", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "micro.yaml"
    path.write_text(SPACE)
    return str(path)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, space_file: str) -> Path:
    runs = tmp_path_factory.mktemp("compare") / "runs"
    result = runner.invoke(app, ["compare", *TINY, "--space", space_file, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Best RFID[classifier] found, over seeds" in result.output
    return runs / "00000-compare-micro"


def test_one_search_per_proposer_and_seed_and_the_plot(comparison: Path) -> None:
    for proposer in PROPOSERS:
        for seed in range(3):
            sub = comparison / f"{proposer}-seed{seed}"
            options = read_json(sub / "options.json")
            assert (options["proposer"], options["seed"], options["promote"]) == (proposer, seed, 0)
            assert (sub / "summary.json").is_file() and (sub / "study.db").is_file()
    with Image.open(comparison / "compare.png") as image:
        assert image.format == "PNG" and image.width > 500
    table = (comparison / "compare.md").read_text()
    assert all(f"| {p} | 3 |" in table for p in PROPOSERS)


def test_aggregates_match_each_searchs_own_summary(comparison: Path) -> None:
    summary = read_json(comparison / "compare.json")
    for proposer in PROPOSERS:
        row = summary["proposers"][proposer]
        own = [read_json(comparison / f"{proposer}-seed{s}" / "summary.json") for s in range(3)]
        bests = [o["best_score"] for o in own]
        assert row["final_best"]["mean"] == pytest.approx(np.mean(bests))
        assert (row["final_best"]["min"], row["final_best"]["max"]) == (min(bests), max(bests))
        trained = [o["status_counts"].get("complete", 0) for o in own]
        assert row["evaluated_mean"] == pytest.approx(np.mean(trained)) == 2
        # training compute: 3 x 2 x MACs x steps x batch per candidate, MACs from the gate
        flops = [
            sum(
                6 * e["gmacs"] * 1e9 * 3 * 8
                for r in (0, 1)
                for e in read_json(comparison / f"{proposer}-seed{s}" / "rounds" / f"round-{r:03d}.json")["entries"]
                if e["reason"] is None
            )
            for s in range(3)
        ]  # fmt: skip
        assert row["training_tflops_mean"] * 1e12 == pytest.approx(np.mean(flops), rel=1e-3)
        for band in (row["by_candidates"], row["by_compute"]):
            means = [m for m in band["mean"] if m is not None]
            assert means == sorted(means, reverse=True)  # a best so far never rises
            assert means[-1] == pytest.approx(np.mean(bests))
        assert row["by_candidates"]["x"] == [1, 2]


def test_resume_runs_only_the_unfinished_search(comparison: Path, monkeypatch) -> None:
    before = (comparison / "compare.json").read_text()
    (comparison / "tpe-seed1" / "summary.json").unlink()  # as if killed in that search
    started = []
    real_run = cmp.SearchRun.run

    def counting(self):
        started.append(self.run_dir.name)
        return real_run(self)

    monkeypatch.setattr(cmp.SearchRun, "run", counting)
    result = runner.invoke(app, ["compare", "--resume", str(comparison)])
    assert result.exit_code == 0, result.output
    assert started == ["tpe-seed1"]
    assert (comparison / "compare.json").read_text() == before  # nothing trained again
    refused = runner.invoke(app, ["compare", "--resume", str(comparison), "--seeds", "5"])
    assert refused.exit_code != 0 and "drop --seeds" in str(refused.exception)


def test_dry_run_and_bad_input_create_nothing(tmp_path, space_file: str) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["compare", "--dry-run", *TINY, "--space", space_file, "--runs", str(runs)]
    )
    assert result.exit_code == 0, result.output
    assert "random-seed0" in result.output and "evolution-seed2" in result.output
    for args, fragment in (
        (["--proposers", "random,genius"], "unknown proposer(s) ['genius']"),
        (["--proposers", "random,random"], "each proposer once"),
        (["--proposers", "diffnas", "--llm", "gpt4"], "llm='gpt4' is not a backend spec"),
        (["--metric", "psnr"], "search.proxy.score.metric"),
        (["--space", "cifar10-ddpm"], "space 'cifar10-ddpm' expects 3x32x32"),
    ):
        result = runner.invoke(app, ["compare", *args, "--runs", str(runs)])
        assert result.exit_code != 0 and fragment in str(result.exception), (args, result.output)
    assert not runs.exists()
