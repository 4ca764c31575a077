"""`diffnas proxy-check` at tiny size: the run folder and its table, the statistics and the
ceiling against scipy on the stored numbers, the compute against its closed form, extra scores
against the search's own evaluation, the same score as a search's executors give, resume,
architectures from a search, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.errors import UserError
from diffnas.execute import base as executor_base
from diffnas.execute.base import InlineExecutor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec, evaluate_candidate
from diffnas.execute.pool import PoolExecutor
from diffnas.execute.table import REFERENCE, Table
from diffnas.experiments import proxy_archs
from diffnas.experiments.proxy_options import ProxyCheckConfig, build_config, load_config
from diffnas.experiments.proxy_summary import summarise, write_summary
from diffnas.gate.entry import RoundEntry
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.report.page import make_figures
from diffnas.report.proxy_study import load_proxy_study
from diffnas.runs import read_json, write_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space.search_space import load_space
from tiny_tables import make_table

runner = CliRunner()
TINY = [
    "--space", "tiny", "--data", "digits", "--data-subset", "200", "--archs", "3",
    "--proxy-steps", "2,4", "--proxy-batch-size", "8", "--metrics", "rfid,kid,loss",
    "--score-samples", "8", "--score-steps", "2", "--reference-steps", "6",
    "--reference-batch-size", "8", "--reference-samples", "8", "--reference-score-steps", "2",
    "--bootstrap", "200", "--device", "cpu", "--seeds", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("proxy") / "runs"
    result = runner.invoke(app, ["proxy-check", *TINY, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Proxy settings against FID[classifier]" in result.output
    assert "best Kendall tau" in result.output and "ceiling" in result.output
    return runs / "00000-proxy-check-tiny"


def stored(study: Path) -> dict[tuple[str, str, int], float]:
    """(arch_id, setting, seed) -> score, read with the csv module (not the table's reader)."""
    with open(study / "table.csv", newline="") as f:
        return {
            (r["arch_id"], r["setting"], int(r["seed"])): float(r["score"])
            for r in csv.DictReader(f)
        }


def test_run_folder_holds_options_table_summary_and_plot(study: Path) -> None:
    for name in (
        "options.json",
        "archs.json",
        "table.csv",
        "table.json",
        "summary.json",
        "summary.md",
    ):
        assert (study / name).is_file(), name
    with Image.open(study / "scatter.png") as image:
        assert image.format == "PNG" and image.width > 300
    archs = read_json(study / "archs.json")
    assert len({a["arch_hash"] for a in archs}) == 3  # distinct
    space = load_space("tiny")
    assert all(space.budget.min_gmacs <= a["macs"] / 1e9 <= space.budget.max_gmacs for a in archs)
    # 2 run lengths x (RFID, KID at N=8 S=2, and the loss), and the reference; 2 seeds each
    config = ProxyCheckConfig.model_validate(read_json(study / "options.json"))
    assert len(config.settings()) == 6 and config.seeds == 2
    values = stored(study)
    assert len(values) == 3 * 7 * 2 and all(np.isfinite(v) for v in values.values())
    assert (study / "archs" / archs[0]["arch_hash"] / "proxy-000004-seed1" / "train").is_dir()


def test_statistics_and_ceiling_match_scipy_on_the_stored_numbers(study: Path) -> None:
    values = stored(study)
    archs = [a["arch_hash"] for a in read_json(study / "archs.json")]
    reference = np.array([[values[a, REFERENCE, k] for k in (0, 1)] for a in archs])
    summary = read_json(study / "summary.json")
    ceiling = summary["ceiling"]["agreement"]
    # two seeds: the ceiling is the reference's seed-to-seed tau
    assert ceiling["kendall_tau"]["value"] == pytest.approx(
        stats.kendalltau(reference[:, 0], reference[:, 1]).statistic
    )
    for row in summary["settings"]:
        proxy = np.array([[values[a, row["setting"], k] for k in (0, 1)] for a in archs])
        assert [p["proxy"] for p in row["points"]] == pytest.approx(proxy.mean(axis=1).tolist())
        mean_reference = reference.mean(axis=1)
        taus = [stats.kendalltau(proxy[:, k], mean_reference).statistic for k in (0, 1)]
        rhos = [stats.spearmanr(proxy[:, k], mean_reference).statistic for k in (0, 1)]
        a = row["agreement"]
        assert a["kendall_tau"]["value"] == pytest.approx(np.nanmean(taus))
        assert a["spearman_rho"]["value"] == pytest.approx(np.nanmean(rhos))
        repeat = stats.kendalltau(proxy[:, 0], proxy[:, 1]).statistic
        assert a["seed_tau"]["value"] == (None if np.isnan(repeat) else pytest.approx(repeat))
        tau = a["kendall_tau"]
        assert tau["value"] is None or tau["low"] <= tau["value"] <= tau["high"]


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


def test_report_plots_the_folder_proxy_check_wrote(study: Path) -> None:
    """`diffnas report --proxy-check RUN_DIR` on this study: the best setting's points are the
    architectures' means over seeds of the table's numbers, its tau scipy's on them."""
    found = load_proxy_study(study)
    summary = read_json(study / "summary.json")
    best = summary["best"] or summary["settings"][0]["setting"]
    values = stored(study)
    archs = [a["arch_hash"] for a in read_json(study / "archs.json")]
    means = [
        (
            np.mean([values[a, best, k] for k in (0, 1)]),
            np.mean([values[a, REFERENCE, k] for k in (0, 1)]),
        )
        for a in archs
    ]
    np.testing.assert_allclose([(x, y) for x, y, _ in found.pairs], means, rtol=1e-9)
    assert [label for *_, label in found.pairs] == ["0", "1", "2", "3"][: len(archs)]
    (figure,) = make_figures([], found)
    tau = stats.kendalltau(*zip(*means)).statistic
    assert f"Kendall's τ = {tau:.2f} over 3 architectures" in figure.caption


def test_extra_scores_reproduce_the_searchs_evaluation(study: Path, tmp_path) -> None:
    """A run's further scores are taken by its worker from the same checkpoint: scoring that
    protocol as an evaluation's own score, as a search does, gives the same number."""
    table = Table.load(study / "table")
    arch_id = table.archs()[1]
    kid = table.setting("s4-kid-n8-s2")  # scored as an extra of the 4-step run
    job = EvalJob(
        arch=table.arch(arch_id), objective="ddpm", data=table.meta.data, spec=kid.spec,
        recipe=kid.recipe, seed=1, workdir=str(tmp_path / "again"),
        cache_dir=str(study.parent / "cache"),
    )  # fmt: skip
    again = evaluate_candidate(job)  # trains afresh: bit-identical weights, same samples
    assert again.score == table.row(arch_id, "s4-kid-n8-s2", 1).score
    assert again.scores["kid"]["protocol"] == kid.protocol


def test_a_candidate_scores_the_same_in_proxy_check_inline_and_in_a_pool_worker(
    study: Path, tmp_path: Path
) -> None:
    """Issue 15's acceptance test: one feature space per dataset on every executor. The search's
    job of a proxy-check candidate (its data spelled as a search spells it, so another
    fingerprint) is run inline with more torch threads than a pool worker gets, each with its
    own empty cache, so each process trains the classifier itself."""
    table = Table.load(study / "table")
    arch_id = table.archs()[1]
    setting = table.setting("s2-rfid-n8-s2")
    config = load_config(study)
    search_data = SearchConfig(data="digits", data_subset=config.data_subset).data_spec()
    assert search_data != table.meta.data  # the proxy-check adds the space's image size

    def search_job(name: str) -> EvalJob:
        return EvalJob(
            arch=table.arch(arch_id), objective="ddpm", data=search_data, spec=setting.spec,
            recipe=setting.recipe, seed=1, workdir=str(tmp_path / name),
            cache_dir=str(tmp_path / name / "cache"),
        )  # fmt: skip

    pool = PoolExecutor(workers=2, gpus=[])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(pool.threads_per_worker + 1)  # not the worker's thread count
        inline = InlineExecutor().run(search_job("inline"))
        torch.set_num_threads(1)
        pooled = pool.run(search_job("pool"))
    finally:
        torch.set_num_threads(threads)
        pool.close()
    for result in (inline, pooled):
        assert result.status == "complete", result.error
        protocol = result.scores[setting.score.metric]["protocol"]
        assert protocol["weights_sha256"] == setting.protocol["weights_sha256"]
        assert result.score == pytest.approx(table.row(arch_id, setting.name, 1).score, rel=1e-6)


def test_resume_runs_only_what_the_table_lacks(study: Path, monkeypatch) -> None:
    before = stored(study)
    lines = (study / "table.csv").read_text().splitlines()
    victim = read_json(study / "archs.json")[2]["arch_hash"]
    (study / "table.csv").write_text(
        "\n".join(line for line in lines if not line.startswith(victim)) + "\n"
    )  # killed before arch 2's rows were written
    (study / "archs" / victim / "reference-seed1" / "result.json").unlink()  # and mid-run
    evaluated = []

    def counting(job):
        evaluated.append(Path(job.workdir).name)
        return evaluate_candidate(job)

    monkeypatch.setattr(executor_base, "evaluate_candidate", counting)
    result = runner.invoke(app, ["proxy-check", "--resume", str(study)])
    assert result.exit_code == 0, result.output
    assert evaluated == ["reference-seed1"]  # the others' results were on disk
    assert stored(study) == before  # the same numbers: training is deterministic
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
        if budget_verdict(measure_cost(arch), space.budget)[0] and arch not in archs:
            archs.append(arch)
    for slot, arch in enumerate([archs[0], archs[1], archs[1], archs[2]]):
        entry = RoundEntry(slot=slot, proposer="random", arch=arch)
        trial = study_mod.start_trial(study, space, entry, 0, "RFID[classifier]")
        result = EvalResult(status="complete", score=float(slot))
        study_mod.finish_trial(study, trial, result, f"trials/{trial.number:05d}")
    rejected = RoundEntry(slot=4, proposer="random", arch=archs[3], reason="x")
    study_mod.add_rejected(study, space, rejected, 0, "RFID[classifier]")
    config = build_config({"archs_from": str(run_dir), "archs": 5})
    assert config.space == "tiny" and config.data_subset == 100  # the search's task
    with pytest.raises(UserError, match="only 3 distinct architectures"):
        proxy_archs.choose_archs(config, space)
    chosen = proxy_archs.choose_archs(config.model_copy(update={"num_archs": 3}), space)
    assert [c.arch for c in chosen] == archs[:3]
    assert [c.source for c in chosen] == [f"trial {n} of {run_dir.name}" for n in (0, 1, 3)]


def test_dry_run_and_bad_input_create_nothing(tmp_path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["proxy-check", "--dry-run", *TINY, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert (
        "reference_tflops" in result.output and "2 steps, KID[classifier] N=8 S=2" in result.output
    )
    assert '"seeds": [\n    0,\n    1\n  ]' in result.output
    for args, fragment in (
        (["--proxy-steps", "100,abc"], "--proxy-steps '100,abc': expected whole numbers"),
        (["--proxy-steps", "100,100"], "distinct whole numbers"),
        (["--metrics", "loss"], "rfid or kid besides loss"),
        (["--metrics", "fid"], "metrics"),
        (["--reference-metric", "psnr"], "reference"),
        (["--data", "fashion-mnist:" + str(tmp_path)], "apt-get install dataset-fashion-mnist"),
        (["--executor", "table:micro-digits"], "executor"),
    ):
        result = runner.invoke(app, ["proxy-check", *args, "--runs", str(runs)])
        assert result.exit_code != 0 and fragment in str(result.exception), (args, result.output)
    for option, value in (("--archs", "2"), ("--seeds", "0")):  # typer's ranges, e.g. 3 to 1000
        result = runner.invoke(app, ["proxy-check", option, value, "--runs", str(runs)])
        assert result.exit_code == 2 and option in result.output, result.output
    assert not runs.exists()


def test_proxy_spec_keeps_the_recipe_and_sets_length_and_loss_window() -> None:
    config = ProxyCheckConfig()
    setting = config.settings()[0]
    spec = config.proxy_spec(500, setting)
    assert isinstance(spec, EvalSpec) and spec.recipe == "proxy"
    assert spec.recipe_overrides == {"batch_size": 32, "steps": 500, "log_every": 50}
    assert (spec.score.metric, spec.score.num_samples, spec.score.steps) == ("rfid", 250, 20)


def test_summary_of_a_hand_made_table_with_its_ceiling(tmp_path) -> None:
    """No training: the summary of any table, here one whose numbers the test chose."""
    reference = {0: [1.0, 2.5], 1: [2.0, 1.5], 2: [3.0, 3.5], 3: [4.0, 4.5]}  # one swap
    proxy = {0: [4.0, 1.0], 1: [3.0, 2.0], 2: [2.0, 3.0], 3: [1.0, 4.0]}

    def score(a: int, setting: str, seed: int) -> float:
        return (reference if setting == REFERENCE else proxy)[a][seed]

    table = make_table(tmp_path / "hand", score)
    summary = summarise(table, top_k=2, resamples=300)
    ref = np.array([reference[a] for a in range(4)])
    ceiling = summary["ceiling"]["agreement"]
    assert ceiling["kendall_tau"]["value"] == pytest.approx(
        stats.kendalltau(ref[:, 0], ref[:, 1]).statistic
    )
    row = next(r for r in summary["settings"] if r["setting"] == "s4-rfid-n8-s2")
    p = np.array([proxy[a] for a in range(4)])
    # seed 0 ranks backwards, seed 1 perfectly against the mean reference: tau averages to 0
    expected = np.mean([stats.kendalltau(p[:, k], ref.mean(axis=1)).statistic for k in (0, 1)])
    assert row["agreement"]["kendall_tau"]["value"] == pytest.approx(expected) == 0
    assert row["agreement"]["seed_tau"]["value"] == pytest.approx(-1)
    write_summary(tmp_path, summary)
    text = (tmp_path / "summary.md").read_text()
    assert "reference itself (ceiling" in text and "+0.67" in text  # the ceiling's tau, 4/6


def test_a_reference_with_more_seeds_than_the_proxies(tmp_path) -> None:
    """Each proxy seed against the mean of all four reference seeds; the ceiling is each
    reference seed against the mean of the other three (scipy on the same numbers)."""
    reference = {0: [1.0, 2.5, 1.2, 0.9], 1: [2.0, 1.5, 2.2, 2.6], 2: [3.0, 3.5, 2.1, 3.3]}
    reference[3] = [4.0, 4.5, 3.9, 1.8]
    proxy = {0: [4.0, 1.0], 1: [3.0, 2.0], 2: [2.0, 3.0], 3: [1.0, 4.0]}

    def score(a: int, setting: str, seed: int) -> float:
        return (reference if setting == REFERENCE else proxy)[a][seed]

    table = make_table(tmp_path / "more", score, reference_seeds=(0, 1, 2, 3))
    summary = summarise(table, top_k=2, resamples=300)
    ref, p = np.array([reference[a] for a in range(4)]), np.array([proxy[a] for a in range(4)])
    others = [np.delete(ref, k, axis=1).mean(axis=1) for k in range(4)]
    expected = np.mean([stats.kendalltau(ref[:, k], others[k]).statistic for k in range(4)])
    ceiling = summary["ceiling"]["agreement"]
    assert ceiling["seeds"] == 4 and ceiling["kendall_tau"]["value"] == pytest.approx(expected)
    row = next(r for r in summary["settings"] if r["setting"] == "s4-rfid-n8-s2")
    expected = np.mean([stats.kendalltau(p[:, k], ref.mean(axis=1)).statistic for k in (0, 1)])
    assert row["agreement"]["seeds"] == 2
    assert row["agreement"]["kendall_tau"]["value"] == pytest.approx(expected)
    assert summary["seeds"] == [0, 1] and summary["reference_seeds"] == [0, 1, 2, 3]
    # the mean of two reference seeds against the mean of the other two, over the 3 splits
    splits = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    means = [
        stats.kendalltau(ref[:, list(a)].mean(axis=1), ref[:, list(b)].mean(axis=1)).statistic
        for a, b in splits
    ]
    assert summary["ceiling_of_means"]["value"] == pytest.approx(np.mean(means))
    write_summary(tmp_path, summary)
    text = (tmp_path / "summary.md").read_text()
    assert "seeds 0, 1 (reference: 0, 1, 2, 3)" in text
    assert (
        f"averaged over 2 seeds against the mean of 2 others (Kendall tau, every split of the seeds): {np.mean(means):+.2f}"
        in text
    )


def test_the_summary_of_a_table_with_nothing_finished(tmp_path) -> None:
    """Every run diverged: the summary says so, with no statistic and no traceback."""
    table = make_table(tmp_path / "none", lambda a, s, k: None)
    summary = summarise(table, resamples=100)
    assert summary["finished"] == 0 and summary["ceiling"]["agreement"]["n"] == 0
    assert all(r["agreement"]["kendall_tau"]["value"] is None for r in summary["settings"])
    write_summary(tmp_path, summary)
    assert "Proxy check: 0 of 4 architectures" in (tmp_path / "summary.md").read_text()
