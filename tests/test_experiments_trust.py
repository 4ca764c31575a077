"""How far to trust a search's proxy, measured on a bundled table (`diffnas.experiments.trust`):
on a hand-made table placed among the bundled ones, the line's tau and ceiling against scipy on
the table's scores, the closest setting labelled when the table lacks the proxy's protocol,
the table found by its space and data (not its file name), and no line without one - in
`trust_line` and in what `diffnas search`, `status` and `report` print."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.data.datasets import DataSpec
from diffnas.execute import table as table_mod
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.execute.table import REFERENCE
from diffnas.experiments.trust import proxy_trust, trust_line
from tiny_tables import FOUR, FOUR_DATA, make_table

runner = CliRunner()

# Scores of the four architectures (one list per seed), chosen so no tau is +-1 or tied:
# the reference's seeds disagree on the first two architectures, the proxy's seeds each swap
# a different pair against the mean reference.
SCORES = {
    REFERENCE: ([1.0, 2.0, 3.0, 4.0], [2.2, 1.9, 3.5, 4.5]),
    "s4-rfid-n8-s2": ([3.0, 1.0, 2.0, 4.0], [1.0, 3.0, 2.0, 4.0]),
    "s2-rfid-n8-s2": ([4.0, 3.0, 2.0, 1.0], [4.0, 2.0, 3.0, 1.0]),
    "s4-loss": ([1.0, 2.0, 4.0, 3.0], [2.0, 1.0, 3.0, 4.0]),
    "s2-loss": ([2.0, 1.0, 4.0, 3.0], [1.0, 2.0, 4.0, 3.0]),
}


def score(a: int, setting: str, seed: int) -> float:
    return SCORES[setting][seed][a]


def expected_tau(setting: str) -> float:
    """Each proxy seed against the mean reference over the seeds, averaged over the seeds."""
    reference = np.mean(SCORES[REFERENCE], axis=0)
    return float(np.mean([stats.kendalltau(s, reference).statistic for s in SCORES[setting]]))


CEILING = float(stats.kendalltau(*SCORES[REFERENCE]).statistic)  # two seeds: seed to seed


def proxy(steps: int = 4, metric: str = "rfid", samples: int = 8) -> EvalSpec:
    """A search's proxy protocol (what `diffnas search --proxy-steps ... ` stores)."""
    return EvalSpec(
        recipe="proxy", recipe_overrides={"steps": steps, "batch_size": 4}, device="cpu",
        score=ScoreSpec(metric=metric, num_samples=samples, steps=2),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """A folder holding the hand-made table under a name that is not the space's (it is found
    by what it records); one for the module, so its taus are computed once."""
    folder = tmp_path_factory.mktemp("tables")
    make_table(folder / "bench-a", score)
    return folder


@pytest.fixture
def bundled(tables, monkeypatch) -> Path:
    """The hand-made table as the only bundled one."""
    monkeypatch.setattr(table_mod, "BUNDLED_DIR", tables)
    return tables


def test_the_line_gives_the_proxy_tau_and_the_ceiling_of_the_table(bundled) -> None:
    assert expected_tau("s4-rfid-n8-s2") == pytest.approx(0.5)  # the constructed case
    assert abs(CEILING - 2 / 3) < 1e-12  # 5 of 6 pairs agree
    for metric, setting in (("rfid", "s4-rfid-n8-s2"), ("loss", "s4-loss")):
        found = proxy_trust(FOUR, FOUR_DATA, proxy(metric=metric))
        assert found is not None and found.exact and found.setting.name == setting
        assert found.archs == 4 and found.table == "bench-a"
        assert found.tau.value == pytest.approx(expected_tau(setting))
        assert found.ceiling.value == pytest.approx(CEILING)
        assert found.tau.low <= found.tau.value <= found.tau.high
        line = found.line()
        assert line == trust_line(FOUR, FOUR_DATA, proxy(metric=metric))
        assert f"Kendall tau {expected_tau(setting):+.2f} [" in line
        assert f"(the ceiling): {CEILING:+.2f} [" in line
        assert "closest" not in line and "table bench-a, 4 architectures" in line


def test_the_interval_is_a_bootstrap_over_the_architectures(bundled) -> None:
    """The printed interval against a percentile bootstrap written here: the architectures
    resampled (the rows of both sides together), draws where tau does not exist left out."""
    found = proxy_trust(FOUR, FOUR_DATA, proxy())
    proxy_scores = np.array(SCORES["s4-rfid-n8-s2"]).T  # architecture x seed
    reference = np.array(SCORES[REFERENCE]).T
    values = []
    for rows in np.random.default_rng(0).integers(0, 4, size=(2000, 4)):
        target = reference[rows].mean(axis=1)
        taus = [stats.kendalltau(proxy_scores[rows, k], target).statistic for k in range(2)]
        taus = [t for t in taus if np.isfinite(t)]
        if taus:
            values.append(np.mean(taus))
    low, high = np.percentile(values, [2.5, 97.5])
    assert (found.tau.low, found.tau.high) == pytest.approx((low, high))


def test_without_the_protocol_the_closest_setting_is_given_and_labelled(bundled) -> None:
    for spec, closest in (
        (proxy(steps=3), "s4-rfid-n8-s2"),  # 3 is nearer 4 than 2 on a log scale
        (proxy(steps=4, samples=9), "s4-rfid-n8-s2"),  # the same metric before a size
        (proxy(steps=1, metric="loss"), "s2-loss"),
    ):
        found = proxy_trust(FOUR, FOUR_DATA, spec)
        assert found is not None and not found.exact and found.setting.name == closest
        assert found.tau.value == pytest.approx(expected_tau(closest))
        assert found.ceiling.value == pytest.approx(CEILING)
        line = found.line()
        assert "no setting with this search's proxy" in line
        assert f"The closest setting, {closest} (" in line
        assert "the table has s2-rfid-n8-s2, s2-loss, s4-rfid-n8-s2, s4-loss." in line
        assert f"Kendall tau {expected_tau(closest):+.2f} [" in line


def test_no_line_without_a_bundled_table_of_the_space_and_data(bundled) -> None:
    other_space = FOUR.model_copy(update={"num_res_blocks": [1]})
    assert trust_line(other_space, FOUR_DATA, proxy()) is None
    other_data = DataSpec(kind="digits", subset=65, image_size=16)
    assert trust_line(FOUR, other_data, proxy()) is None
    assert trust_line(None, FOUR_DATA, proxy()) is None  # the space file is gone
    renamed = FOUR.model_copy(update={"name": "mine", "description": "a copy"})
    assert trust_line(renamed, FOUR_DATA, proxy()) is not None  # the same space


def test_a_reference_with_more_seeds_says_what_its_ceiling_is(tmp_path, monkeypatch) -> None:
    # three reference seeds: the ceiling is each against the mean of the other two
    third = [4.0, 1.0, 2.0, 3.0]

    def three(a: int, setting: str, seed: int) -> float:
        return third[a] if seed == 2 else score(a, setting, seed)

    monkeypatch.setattr(table_mod, "BUNDLED_DIR", tmp_path)
    make_table(tmp_path / "three", three, reference_seeds=(0, 1, 2))
    found = proxy_trust(FOUR, FOUR_DATA, proxy())
    x = np.array([*SCORES[REFERENCE], third]).T
    loo = [stats.kendalltau(x[:, k], np.delete(x, k, axis=1).mean(axis=1))[0] for k in range(3)]
    assert found is not None and found.ceiling.value == pytest.approx(np.mean(loo))
    assert (
        "itself, each of its 3 seeds against the mean of the others (the ceiling)" in found.line()
    )


def test_a_damaged_bundled_table_is_passed_over(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(table_mod, "BUNDLED_DIR", tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.csv").write_text("")
    assert trust_line(FOUR, FOUR_DATA, proxy()) is None
    make_table(tmp_path / "whole", score)
    assert trust_line(FOUR, FOUR_DATA, proxy()) is not None


def test_search_status_and_report_print_the_line_only_with_a_bundled_table(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "built").mkdir()
    built = make_table(tmp_path / "built" / "four-digits", score)
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setattr(table_mod, "BUNDLED_DIR", empty)
    space = tmp_path / "four.yaml"
    space.write_text(yaml.safe_dump(FOUR.model_dump(mode="json")))
    args = [
        "search", "--space", str(space), "--proposer", "random", "--data", "digits",
        "--data-subset", "64", "--proxy-steps", "4", "--proxy-batch-size", "4", "--metric",
        "rfid", "--score-samples", "8", "--score-steps", "2", "--device", "cpu", "--rounds", "1",
        "--per-round", "2", "--executor", f"table:{built.stem}", "--runs", str(tmp_path / "runs"),
    ]  # fmt: skip
    searched = runner.invoke(app, args)
    assert searched.exit_code == 0, searched.output
    run_dir = next((tmp_path / "runs").iterdir())
    shown = runner.invoke(app, ["status", str(run_dir)])
    assert shown.exit_code == 0 and "*" in shown.output  # a winner, and no table: no line
    assert "proxy trust" not in searched.output + shown.output

    monkeypatch.setattr(table_mod, "BUNDLED_DIR", built.stem.parent)  # now it ships
    wanted = f"this search's proxy (4 steps x 4, RFID[classifier] N=8 S=2) ranks with Kendall tau {expected_tau('s4-rfid-n8-s2'):+.2f} ["
    shown = runner.invoke(app, ["status", str(run_dir)])
    assert shown.exit_code == 0 and wanted in " ".join(shown.output.split())
    reported = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert reported.exit_code == 0 and wanted in " ".join(reported.output.split())
    markdown = (tmp_path / "report" / "report.md").read_text().replace("\\", "")  # unescaped
    assert wanted in markdown and f"(the ceiling): {CEILING:+.2f} [" in markdown
    page = (tmp_path / "report" / "report.html").read_text()
    assert re.search(r"<p>proxy trust \(table four-digits, 4 architectures\)", page)
    again = runner.invoke(app, [*args[:-2], "--runs", str(tmp_path / "runs2")])
    assert again.exit_code == 0 and wanted in " ".join(again.output.split())
