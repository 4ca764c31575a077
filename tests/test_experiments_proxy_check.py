"""`diffnas proxy-check` at tiny size: the run folder, the statistics against scipy on the
stored numbers, the compute against its closed form, rescoring against the search's own
evaluation, resume, architectures from a search, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.execute.job import EvalResult, EvalSpec
from diffnas.experiments import proxy_check as pc
from diffnas.gate.entry import RoundEntry
from diffnas.runs import read_json, read_jsonl, write_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space.search_space import load_space

runner = CliRunner()
TINY = [
    "--space", "tiny", "--data", "digits", "--data-subset", "200", "--archs", "3",
    "--proxy-steps", "2,4", "--proxy-batch-size", "8", "--metrics", "rfid,kid,loss",
    "--score-samples", "8", "--score-steps", "2", "--reference-steps", "6",
    "--reference-batch-size", "8", "--reference-samples", "8", "--reference-score-steps", "2",
    "--bootstrap", "200", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("proxy") / "runs"
    result = runner.invoke(app, ["proxy-check", *TINY, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Proxy settings against FID[classifier]" in result.output
    assert "best Kendall tau" in result.output
    return runs / "00000-proxy-check-tiny"


def test_run_folder_holds_options_results_summary_and_plot(study: Path) -> None:
    for name in ("options.json", "archs.json", "results.jsonl", "summary.json", "summary.md"):
        assert (study / name).is_file(), name
    with Image.open(study / "scatter.png") as image:
        assert image.format == "PNG" and image.width > 300
    records = list(read_jsonl(study / "results.jsonl"))
    assert [r["index"] for r in records] == [0, 1, 2]
    archs = read_json(study / "archs.json")
    assert len({a["arch_hash"] for a in archs}) == 3  # distinct
    space = load_space("tiny")
    assert all(space.budget.min_gmacs <= a["macs"] / 1e9 <= space.budget.max_gmacs for a in archs)
    # 2 run lengths x (RFID, KID at N=8 S=2, and the loss), every one measured
    config = pc.ProxyCheckConfig.model_validate(read_json(study / "options.json"))
    assert len(config.settings()) == 6
    assert all(v is not None for r in records for v in r["values"].values())
    assert (study / "archs" / f"000-{archs[0]['arch_hash']}" / "proxy-000004" / "train").is_dir()


def test_statistics_match_scipy_on_the_stored_numbers(study: Path) -> None:
    records = {r["index"]: r for r in read_jsonl(study / "results.jsonl")}
    summary = read_json(study / "summary.json")
    for row in summary["settings"]:
        proxy = [records[i]["values"][row["setting"]] for i in sorted(records)]
        reference = [records[i]["reference"]["value"] for i in sorted(records)]
        assert [p["proxy"] for p in row["points"]] == proxy
        tau, rho = row["agreement"]["kendall_tau"], row["agreement"]["spearman_rho"]
        assert tau["value"] == pytest.approx(stats.kendalltau(proxy, reference).statistic)
        assert rho["value"] == pytest.approx(stats.spearmanr(proxy, reference).statistic)
        assert tau["low"] <= tau["value"] <= tau["high"]


def test_compute_is_the_closed_form(study: Path) -> None:
    # training 3 x 2 x MACs x steps x batch, sampling 2 x MACs x N x S, summed over the archs
    macs = sum(a["macs"] for a in read_json(study / "archs.json"))
    rows = {r["setting"]: r for r in read_json(study / "summary.json")["settings"]}
    assert rows["s4-rfid-n8-s2"]["proxy_tflops"] * 1e12 == pytest.approx(
        6 * macs * 4 * 8 + 2 * macs * 8 * 2
    )
    assert rows["s2-loss"]["proxy_tflops"] * 1e12 == pytest.approx(6 * macs * 2 * 8)
    reference = 6 * macs * 6 * 8 + 2 * macs * 8 * 2
    assert rows["s2-loss"]["compute_ratio"] == pytest.approx(reference / (6 * macs * 2 * 8))


def test_rescoring_reproduces_the_searchs_evaluation(study: Path) -> None:
    """The first score of a run comes from `evaluate_candidate`; scoring the same checkpoint
    again the way further settings are scored gives the same number."""
    config = pc.load_config(study)
    entry = pc.ArchEntry.model_validate(read_json(study / "archs.json")[1])
    first = config.settings()[0]
    job = pc.ProxyCheck(config, study, log=lambda _: None).job(
        entry, config.proxy_spec(first.steps, first), f"proxy-{first.steps:06d}"
    )
    again = pc.rescore(job, {"again": first.score_spec(config.proxy.score)})["again"]
    stored = next(r for r in read_jsonl(study / "results.jsonl") if r["index"] == 1)
    assert again["value"] == stored["values"][first.key]  # bit for bit: same samples
    assert again["protocol"] == stored["scores"][first.key]["protocol"]


def test_resume_skips_finished_architectures(study: Path, monkeypatch) -> None:
    records = (study / "results.jsonl").read_text().splitlines()
    (study / "results.jsonl").write_text("\n".join(records[:2]) + "\n")  # killed during arch 2
    evaluated = []
    real = pc.evaluate_candidate

    def counting(job):
        evaluated.append(Path(job.workdir).parent.name)
        return real(job)

    monkeypatch.setattr(pc, "evaluate_candidate", counting)
    result = runner.invoke(app, ["proxy-check", "--resume", str(study)])
    assert result.exit_code == 0, result.output
    hash2 = read_json(study / "archs.json")[2]["arch_hash"]
    assert evaluated == [f"002-{hash2}"] * 3  # its two proxy runs and its reference only
    again = (study / "results.jsonl").read_text().splitlines()
    assert again[:2] == records[:2]
    # its training resumed from the finished checkpoints: the same numbers
    assert json.loads(again[2])["values"] == json.loads(records[2])["values"]
    refused = runner.invoke(app, ["proxy-check", "--resume", str(study), "--archs", "4"])
    assert refused.exit_code != 0 and "drop --archs" in str(refused.exception)


def test_architectures_from_a_search_run_folder(tmp_path) -> None:
    """The trained candidates of a search, in trial order: no rejected one, no duplicate."""
    space = load_space("tiny")
    run_dir = tmp_path / "00000-search-tiny"
    run_dir.mkdir()
    write_json(run_dir / "options.json", SearchConfig(data_subset=100).model_dump(mode="json"))
    study = study_mod.open_study(run_dir)
    import random

    rng = random.Random(3)
    archs = []
    while len(archs) < 4:
        arch = space.sample(rng)
        if pc.budget_verdict(pc.measure_cost(arch), space.budget)[0] and arch not in archs:
            archs.append(arch)
    for slot, arch in enumerate([archs[0], archs[1], archs[1], archs[2]]):
        entry = RoundEntry(slot=slot, proposer="random", arch=arch)
        trial = study_mod.start_trial(study, space, entry, 0, "RFID[classifier]")
        result = EvalResult(status="complete", score=float(slot))
        study_mod.finish_trial(study, trial, result, f"trials/{trial.number:05d}")
    rejected = RoundEntry(slot=4, proposer="random", arch=archs[3], reason="x")
    study_mod.add_rejected(study, space, rejected, 0, "RFID[classifier]")
    config = pc.build_config({"archs_from": str(run_dir), "archs": 5})
    assert config.space == "tiny" and config.data_subset == 100  # the search's task
    with pytest.raises(pc.UserError, match="only 3 distinct architectures"):
        pc.choose_archs(config, space)
    chosen = pc.choose_archs(config.model_copy(update={"num_archs": 3}), space)
    assert [c.arch for c in chosen] == archs[:3]
    assert [c.source for c in chosen] == [f"trial {n} of {run_dir.name}" for n in (0, 1, 3)]


def test_dry_run_and_bad_input_create_nothing(tmp_path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["proxy-check", "--dry-run", *TINY, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert (
        "reference_tflops" in result.output and "2 steps, KID[classifier] N=8 S=2" in result.output
    )
    for args, fragment in (
        (["--proxy-steps", "100,abc"], "--proxy-steps '100,abc': expected whole numbers"),
        (["--proxy-steps", "100,100"], "distinct whole numbers"),
        (["--metrics", "loss"], "rfid or kid besides loss"),
        (["--metrics", "fid"], "metrics"),
        (["--reference-metric", "psnr"], "reference"),
        (["--data", "fashion-mnist:" + str(tmp_path)], "apt-get install dataset-fashion-mnist"),
    ):
        result = runner.invoke(app, ["proxy-check", *args, "--runs", str(runs)])
        assert result.exit_code != 0 and fragment in str(result.exception), (args, result.output)
    result = runner.invoke(app, ["proxy-check", "--archs", "2", "--runs", str(runs)])
    assert result.exit_code == 2 and "--archs" in result.output  # typer's range: 3 to 1000
    assert not runs.exists()


def test_proxy_spec_keeps_the_recipe_and_sets_length_and_loss_window() -> None:
    config = pc.ProxyCheckConfig()
    setting = config.settings()[0]
    spec = config.proxy_spec(500, setting)
    assert isinstance(spec, EvalSpec) and spec.recipe == "proxy"
    assert spec.recipe_overrides == {"batch_size": 32, "steps": 500, "log_every": 50}
    assert (spec.score.metric, spec.score.num_samples, spec.score.steps) == ("rfid", 250, 20)
