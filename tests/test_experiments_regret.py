"""`diffnas compare` judges what each search hands back: on a hand-made table with a known
optimum, every expected value is computed here from the table's CSV and the trials each search
recorded (trials/NNNNN/job.json and result.json), not by the code under test; the intervals
against a bootstrap written here with numpy; "A beats B" against a hand count; and without a
table, the reference score from the search's own promoted final training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.execute.table import REFERENCE
from diffnas.experiments import compare as cmp
from diffnas.experiments import regret
from diffnas.runs import read_json
from diffnas.space.arch import parse_arch
from tiny_tables import FOUR, make_table

runner = CliRunner()
SEEDS = 3
# Mean reference scores 3, 1, 4, 2 (+ seed noise far below the gaps): the optimum is the second
# architecture, the top 3 the second, fourth and first.
REFERENCE_MEANS = [3.0, 1.0, 4.0, 2.0]
# The proxy agrees with the reference on the best (so a search that sees every architecture
# hands back the optimum) but orders the rest otherwise (3rd, 4th, 1st), so the regret of the
# best so far by proxy differs from the best so far by reference on the way.
PROXY = [0.5, 0.1, 0.3, 0.9]


def score(a: int, setting: str, seed: int) -> float:
    if setting == REFERENCE:
        return REFERENCE_MEANS[a] + 0.01 * seed
    return PROXY[a] + 0.01 * seed


SEARCH = [
    "--data", "digits", "--data-subset", "64", "--proxy-steps", "4", "--proxy-batch-size", "4",
    "--score-samples", "8", "--score-steps", "2", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "four.yaml"
    path.write_text(yaml.safe_dump(FOUR.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def table_stem(tmp_path_factory) -> Path:
    stem = tmp_path_factory.mktemp("table") / "four-digits"
    make_table(stem, score)
    return stem


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, space_file: Path, table_stem: Path) -> Path:
    """random and tpe, 4 seeds each, 2 rounds of 2 against the table: random draws a new
    architecture each time, so its 4 evaluations enumerate the space in a random order."""
    runs = tmp_path_factory.mktemp("compare") / "runs"
    args = ["compare", "--proposers", "random,tpe", "--seeds", str(SEEDS), "--rounds", "2"]
    args += ["--per-round", "2", *SEARCH, "--space", str(space_file), "--runs", str(runs)]
    result = runner.invoke(app, [*args, "--executor", f"table:{table_stem}"])
    assert result.exit_code == 0, result.output
    assert "What each search hands back" in result.output
    assert "P(row beats column), by final regret" in result.output
    return next(runs.iterdir())


def table_means(stem: Path) -> dict[str, float]:
    """arch_id -> mean reference score, read from the CSV with the csv module."""
    by_arch: dict[str, list[float]] = {}
    with open(stem.with_name(stem.name + ".csv"), newline="") as f:
        for row in csv.DictReader(f):
            if row["setting"] == REFERENCE:
                by_arch.setdefault(row["arch_id"], []).append(float(row["score"]))
    return {a: float(np.mean(v)) for a, v in by_arch.items()}


def recorded_trials(search_dir: Path) -> list[dict]:
    """What the search recorded, in trial order: arch_id, proxy score and device-seconds."""
    out = []
    for trial in sorted((search_dir / "trials").iterdir()):
        result = read_json(trial / "result.json")
        arch = parse_arch(read_json(trial / "job.json")["arch"])
        out.append(
            {"arch_id": arch.arch_hash(), "score": result["score"], "device_s": result["device_s"]}
        )
    return out


def expected(search_dir: Path, means: dict[str, float]) -> dict:
    """The judgement of one search, computed from its trials and the table's means alone."""
    trials = recorded_trials(search_dir)
    optimum = min(means.values())
    order = sorted(means, key=means.get)  # best first; no ties in this table
    out: dict = {"curve": [], "spent": 0.0}
    best = None
    for n, t in enumerate(trials, start=1):
        out["spent"] += t["device_s"]
        if best is None or t["score"] < best["score"]:
            best = t
        out["curve"].append(
            {"evaluations": n, "device_s": out["spent"], "regret": means[best["arch_id"]] - optimum}
        )
        for k in (1, 3):
            if f"top{k}" not in out and t["arch_id"] in order[:k]:
                out[f"top{k}"] = {"evaluations": n, "device_s": out["spent"]}
    out["handed_back"] = best
    out["regret"] = means[best["arch_id"]] - optimum
    return out


def numpy_bootstrap(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple:
    """The percentile bootstrap interval of the mean, written out: resample the seeds with
    replacement, take each resample's mean, read the 2.5 % and 97.5 % quantiles."""
    x = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    low, high = np.quantile(x[draws].mean(axis=1), [0.025, 0.975])
    return float(low), float(high)


def test_an_enumerating_search_hands_back_the_optimum_with_regret_0(
    comparison: Path, table_stem: Path
) -> None:
    means = table_means(table_stem)
    best_arch = min(means, key=means.get)
    summary = read_json(comparison / "compare.json")
    judged = summary["judged"]
    assert judged["table"] == "four-digits"
    assert judged["optimum"]["arch_id"] == best_arch
    assert judged["optimum"]["score"] == pytest.approx(means[best_arch]) == 1.005
    for seed in range(SEEDS):
        sub = comparison / f"random-seed{seed}"
        trials = recorded_trials(sub)
        assert sorted(t["arch_id"] for t in trials) == sorted(means)  # every architecture once
        s = judged["searches"][f"random-seed{seed}"]
        assert s["regret"] == 0.0 and s["rank"] == 1 and s["arch_id"] == best_arch
        assert s["reference"] == pytest.approx(means[best_arch]) and s["reference_from"] == "table"
        position = [t["arch_id"] for t in trials].index(best_arch) + 1
        assert s["top1"]["evaluations"] == position
        spent = sum(t["device_s"] for t in trials[:position])
        assert s["top1"]["device_s"] == pytest.approx(spent)
        # device-seconds are the table's rows (10 x (index + 1) + seed): never zero
        assert spent >= 10.0 * position
    row = summary["proposers"]["random"]["judged"]
    assert row["regret"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": SEEDS}
    assert row["top1"]["found"] == row["top1"]["of"] == SEEDS


def test_every_search_is_judged_from_its_trials_and_the_table(
    comparison: Path, table_stem: Path
) -> None:
    means = table_means(table_stem)
    summary = read_json(comparison / "compare.json")
    regrets_seen = set()
    for proposer in ("random", "tpe"):
        for seed in range(SEEDS):
            name = f"{proposer}-seed{seed}"
            want = expected(comparison / name, means)
            got = summary["judged"]["searches"][name]
            assert got["arch_id"] == want["handed_back"]["arch_id"]
            assert got["proxy_best"] == pytest.approx(want["handed_back"]["score"])
            assert got["regret"] == pytest.approx(want["regret"])
            assert got["device_s"] == pytest.approx(want["spent"])
            for k in (1, 3):
                if f"top{k}" in want:
                    assert got[f"top{k}"]["evaluations"] == want[f"top{k}"]["evaluations"]
                    assert got[f"top{k}"]["device_s"] == pytest.approx(want[f"top{k}"]["device_s"])
                else:
                    assert got[f"top{k}"] == {"evaluations": None, "device_s": None}
            assert len(got["curve"]) == len(want["curve"])
            for g, w in zip(got["curve"], want["curve"]):
                assert g["evaluations"] == w["evaluations"]
                assert g["device_s"] == pytest.approx(w["device_s"])
                assert g["regret"] == pytest.approx(w["regret"])
                regrets_seen.add(round(w["regret"], 6))
            # the proxy best stays a column, next to the reference
            assert got["proxy_best"] == read_json(comparison / name / "summary.json")["best_score"]
    # the curves pass through regrets other than 0 (the proxy misorders the others)
    assert len(regrets_seen) >= 2
    table = (comparison / "compare.md").read_text()
    assert "## What each search hands back" in table and "| random | 3 |" in table
    with Image.open(comparison / "compare.png") as image:  # proxy row and regret row
        assert image.height > 0.6 * image.width


def test_means_intervals_and_bands_match_an_independent_bootstrap(
    comparison: Path, table_stem: Path
) -> None:
    means = table_means(table_stem)
    summary = read_json(comparison / "compare.json")
    for proposer in ("random", "tpe"):
        wants = [expected(comparison / f"{proposer}-seed{s}", means) for s in range(SEEDS)]
        row = summary["proposers"][proposer]["judged"]
        regrets = [w["regret"] for w in wants]
        assert row["regret"]["mean"] == pytest.approx(np.mean(regrets))
        assert (row["regret"]["low"], row["regret"]["high"]) == pytest.approx(
            numpy_bootstrap(regrets)
        )
        steps = [w["top3"]["evaluations"] for w in wants if "top3" in w]
        assert row["top3"]["found"] == len(steps)
        assert row["top3"]["evaluations"]["mean"] == pytest.approx(np.mean(steps))
        if len(steps) >= 2:
            assert (
                row["top3"]["evaluations"]["low"],
                row["top3"]["evaluations"]["high"],
            ) == pytest.approx(numpy_bootstrap(steps))
        # the band at one evaluation: every seed's regret after its first candidate
        band = summary["judged"]["curves"][proposer]["by_evaluations"]
        first = [w["curve"][0]["regret"] for w in wants]
        assert band["x"][0] == 1 and band["mean"][0] == pytest.approx(np.mean(first))
        assert band["low"][0] <= band["mean"][0] <= band["high"][0]
        assert min(first) <= band["low"][0] and band["high"][0] <= max(first)


def test_mean_interval_is_the_percentile_bootstrap_of_the_mean() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    got = regret.mean_interval([*values, None])  # an unknown value is left out
    assert got["n"] == 7 and got["mean"] == pytest.approx(np.mean(values))
    assert (got["low"], got["high"]) == pytest.approx(numpy_bootstrap(values))
    assert regret.mean_interval([2.5]) == {"mean": 2.5, "low": None, "high": None, "n": 1}
    assert regret.mean_interval([None])["mean"] is None


def test_a_beats_b_is_the_share_of_seed_pairs_with_ties_half() -> None:
    finals = {"A": [0.0, 1.0, 2.0], "B": [1.0, 1.0, 3.0], "C": [None], "D": [0.5]}
    got = regret.beats(finals)
    # A against B, pair by pair: 0<1, 0<1, 0<3, 1=1, 1=1, 1<3, 2>1, 2>1, 2<3: 5 wins, 2 ties
    assert got["A"]["B"] == pytest.approx((5 + 0.5 * 2) / 9)
    assert got["B"]["A"] == pytest.approx((2 + 0.5 * 2) / 9)
    assert got["A"]["D"] == pytest.approx(1 / 3) and got["D"]["B"] == 1.0
    assert got["A"]["C"] is None and got["C"]["A"] is None


def test_a_beats_b_in_the_comparison_from_the_final_regrets(
    comparison: Path, table_stem: Path
) -> None:
    means = table_means(table_stem)
    summary = read_json(comparison / "compare.json")
    finals = {
        p: [expected(comparison / f"{p}-seed{s}", means)["regret"] for s in range(SEEDS)]
        for p in ("random", "tpe")
    }
    wins = sum(a < b for a in finals["random"] for b in finals["tpe"])
    ties = sum(a == b for a in finals["random"] for b in finals["tpe"])
    assert summary["judged"]["beats_on"] == "regret"
    assert summary["judged"]["beats"]["random"]["tpe"] == pytest.approx(
        (wins + 0.5 * ties) / SEEDS**2
    )


def test_without_a_table_the_reference_is_the_promoted_final_training(
    tmp_path, space_file: Path
) -> None:
    runs = tmp_path / "runs"
    args = ["compare", "--proposers", "random", "--seeds", "2", "--rounds", "1", "--per-round"]
    args += ["2", *SEARCH, "--space", str(space_file), "--runs", str(runs), "--promote", "1"]
    args += ["--final-steps", "2", "--fid-samples", "8", "--fid-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = next(runs.iterdir())
    summary = read_json(run_dir / "compare.json")
    judged = summary["judged"]
    assert judged["table"] is None and judged["curves"] is None
    assert judged["reference_label"] == "FID[classifier]"
    finals = []
    for seed in range(2):
        own = read_json(run_dir / f"random-seed{seed}" / "summary.json")
        (final,) = own["final"]
        assert final["trial"] == own["best_trial"]
        s = judged["searches"][f"random-seed{seed}"]
        assert s["reference"] == final["score"] and s["reference_from"] == "final"
        assert s["regret"] is None and s["top1"]["evaluations"] is None
        finals.append(final["score"])
    row = summary["proposers"]["random"]["judged"]
    assert row["reference"]["mean"] == pytest.approx(np.mean(finals))
    assert judged["beats_on"] == "reference"
    # a search with no final training: no reference score, and the reason given
    config = cmp.load_config(run_dir)
    memory = cmp.load_memory(run_dir / "random-seed0")
    alone = regret.judge_search(memory, [], None)
    assert alone["reference"] is None and "no final training" in alone["note"]
    assert alone["trial"] == read_json(run_dir / "random-seed0" / "summary.json")["best_trial"]
    assert config.search.promote == 1 and config.search.final.recipe_overrides == {"steps": 2}


def test_final_options_without_promotion_and_protocols_a_table_lacks_are_refused(
    tmp_path, space_file: Path, table_stem: Path
) -> None:
    runs = tmp_path / "runs"
    base = ["compare", *SEARCH, "--space", str(space_file), "--runs", str(runs)]
    for extra, fragment in (
        (
            ["--score-samples", "9", "--executor", f"table:{table_stem}"],
            "has no setting for the search's proxy protocol",
        ),
        (["--final-steps", "5"], "--final-steps: nothing is promoted"),
        (
            ["--promote", "1", "--fid-steps", "3", "--executor", f"table:{table_stem}"],
            "is the table's reference; drop --fid-steps",
        ),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code != 0 and fragment in str(result.exception), result.output
    assert not runs.exists()
