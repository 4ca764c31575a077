"""`diffnas tabulate`: enumerating a space (against uniform sampling), the micro preset (a strict
subset of tiny), a 4-architecture table end to end, killed with SIGKILL at a random moment and
resumed to the same table, and spaces too large to enumerate refused with their count."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.errors import UserError
from diffnas.execute import base as executor_base
from diffnas.execute.job import EvalJob, EvalResult, evaluate_candidate
from diffnas.execute.table import REFERENCE, Table, read_rows, table_files
from diffnas.experiments.tabulate import (
    ceiling_so_far,
    enumerate_archs,
    plan_units,
    table_settings,
)
from diffnas.model.cost import Cost, budget_verdict, measure_cost
from diffnas.runs import read_json
from diffnas.space.search_space import load_space
from tiny_tables import FOUR, FOUR_DATA, FOUR_OPTIONS, FOUR_STUDY, four_archs, make_table

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def test_enumeration_is_every_architecture_uniform_sampling_finds() -> None:
    space = FOUR.model_copy(update={"channel_mult_values": [1, 2], "attention_resolutions": [8]})
    listed = list(space.enumerate())
    keys = [a.key() for a in listed]
    assert len(set(keys)) == len(keys)  # distinct
    rng = random.Random(0)
    sampled = {space.sample(rng).key() for _ in range(3000)}
    assert sampled == set(keys)  # nothing missed, nothing invented
    # the closed form counts choice combinations: 3 multiplier pairs x 2 attention subsets
    # x 2 block counts x 2 middle attentions; the head width of a net without attention is
    # moot, so fewer distinct architectures
    assert space.combinations() == 3 * 2 * 2 * 2 == 24
    assert len(listed) <= 24


def test_micro_is_a_strict_subset_of_tiny_with_24_to_48_architectures() -> None:
    micro, tiny = load_space("micro"), load_space("tiny")
    for field in ("image_size", "in_channels", "objective"):
        assert getattr(micro, field) == getattr(tiny, field)
    assert tiny.budget.min_gmacs <= micro.budget.min_gmacs < micro.budget.max_gmacs
    assert micro.budget.max_gmacs <= tiny.budget.max_gmacs
    entries = list(enumerate_archs(micro).values())
    archs = [entry.arch for entry in entries]
    assert 24 <= len(archs) <= 48
    for entry in entries:  # every micro architecture is a tiny one, within tiny's budget
        assert tiny.contains(entry.arch)
        cost = Cost(params=entry.params, macs=entry.macs, image_size=16)
        assert budget_verdict(cost, tiny.budget)[0]
    assert micro.combinations() < tiny.combinations()
    # it varies what the paper searches
    assert len({a.base_channels for a in archs}) >= 2
    assert len({tuple(a.channel_mult) for a in archs}) >= 3
    assert len({a.num_res_blocks for a in archs}) >= 2
    assert len({tuple(sorted(a.attention_resolutions)) for a in archs}) >= 3
    assert micro.contains(load_reference("micro-digits"))


def load_reference(name: str):
    from diffnas.space.references import get_reference

    return get_reference(name)


def test_a_space_too_large_to_enumerate_is_refused_with_its_count(tmp_path) -> None:
    tiny = load_space("tiny")
    with pytest.raises(UserError, match=f"{tiny.combinations():,} combinations"):
        enumerate_archs(tiny)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["tabulate", "--space", "tiny", "--runs", str(runs)])
    assert "13,312 combinations" in str(result.exception) and "micro" in str(result.exception)
    for args, fragment in (
        (["--executor", "table:micro-digits"], "executor"),
        (["--proxy-steps", "2,x"], "--proxy-steps"),
    ):
        result = runner.invoke(app, ["tabulate", "--space", "micro", *args, "--runs", str(runs)])
        assert fragment in str(result.exception), (args, result.output)
    result = runner.invoke(app, ["tabulate", "--seeds", "0", "--runs", str(runs)])
    assert result.exit_code == 2 and "--seeds" in result.output  # typer's range: 1 to 100
    assert not runs.exists()


def four_space(tmp_path: Path) -> Path:
    path = tmp_path / "four.yaml"
    path.write_text(yaml.safe_dump(FOUR.model_dump(mode="json")))
    return path


def test_dry_run_plans_every_evaluation_and_its_compute(tmp_path) -> None:
    args = ["tabulate", "--space", str(four_space(tmp_path)), *FOUR_OPTIONS, "--dry-run"]
    result = runner.invoke(app, [*args, "--seeds", "3", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    # 4 archs x (2 proxy runs + the reference) x 3 seeds; rows: x (2 x 2 proxy settings + 1)
    assert '"runs": 36' in result.output and '"rows": 60' in result.output
    macs = sum(measure_cost(a).macs for a in FOUR.enumerate())
    # per seed: training 6 x MACs x steps x batch (2, 4 and 4 steps at batch 4), sampling
    # 2 x MACs x N x S for the two RFIDs and the reference (N=8, S=2)
    expected = 3 * (6 * macs * (2 + 4 + 4) * 4 + 3 * 2 * macs * 8 * 2) / 1e12
    shown = result.output.split('"training_and_sampling_tflops": ')[1].split()[0]
    assert float(shown) == pytest.approx(expected)
    assert not (tmp_path / "runs").exists()


def test_the_reference_runs_first_with_its_seeds_side_by_side(tmp_path) -> None:
    # a partial table then tells the reference's seed-to-seed ranking (the noise ceiling) first;
    # the proxy runs follow seed by seed, so a partial table holds whole proxy seeds
    settings = table_settings(FOUR_STUDY, FOUR, FOUR_DATA)
    archs = four_archs()
    units = plan_units(settings, archs, [0, 1], [0, 1], "ddpm", FOUR_DATA, tmp_path, tmp_path)
    runs = [(u.arch_id, Path(u.job.workdir).name) for u in units]
    assert runs[:8] == [(a, f"reference-seed{s}") for a in archs for s in (0, 1)]
    assert runs[8:] == [
        (a, f"proxy-{n:06d}-seed{s}") for s in (0, 1) for a in archs for n in (2, 4)
    ]
    assert all(u.job.seed == int(name[-1]) for u, (_, name) in zip(units, runs, strict=True))
    # the reference may have seeds of its own: all of them first, the proxies' as before
    units = plan_units(settings, archs, [0, 1], [0, 1, 2], "ddpm", FOUR_DATA, tmp_path, tmp_path)
    runs = [(u.arch_id, Path(u.job.workdir).name) for u in units]
    assert runs[:12] == [(a, f"reference-seed{s}") for a in archs for s in (0, 1, 2)]
    assert len(runs) == 12 + 16 and all("proxy" in name for _, name in runs[12:])


def test_the_log_tells_the_ceiling_so_far(tmp_path) -> None:
    # seed 1 swaps the last two of four: 5 of 6 pairs agree, tau = (5 - 1) / 6
    swapped = {2: 3, 3: 2}
    table = make_table(tmp_path / "t", lambda a, s, k: float(swapped.get(a, a) if k else a))
    assert ceiling_so_far(table) == "  ceiling so far: seed-to-seed tau +0.67 over 4 architectures"
    # an architecture missing a seed is left out; three are too few to say anything
    partial = make_table(tmp_path / "p", lambda a, s, k: None if (a, k) == (3, 1) else float(a))
    assert ceiling_so_far(partial) == "  ceiling: 3 architectures on every seed so far"
    # with three reference seeds: the mean over the three pairs, 0-1 and 0-2 swapped, 1-2 not
    three = make_table(
        tmp_path / "r", lambda a, s, k: float(swapped.get(a, a) if k else a),
        reference_seeds=(0, 1, 2),
    )  # fmt: skip
    assert ceiling_so_far(three).startswith("  ceiling so far: seed-to-seed tau +0.78 over 4")
    # with four: seeds 1 and 3 swap the last two; pairs 0-2 and 1-3 agree, the other four
    # pairs give 4/6; the means of {0,1} and {2,3} (and of {0,3} and {1,2}) both tie the last
    # two, so they agree (tau-b 1); those of {0,2} and {1,3} swap them (4/6)
    four = make_table(
        tmp_path / "f", lambda a, s, k: float(swapped.get(a, a) if k % 2 else a),
        reference_seeds=(0, 1, 2, 3),
    )  # fmt: skip
    pairs, means = (2 + 4 * 4 / 6) / 6, (2 + 4 / 6) / 3
    assert ceiling_so_far(four) == (
        f"  ceiling so far: seed-to-seed tau {pairs:+.2f}, 2-seed means {means:+.2f} over 4 "
        "architectures"
    )


def tabulate_args(tmp_path: Path, runs: Path) -> list[str]:
    return ["tabulate", "--space", str(four_space(tmp_path)), *FOUR_OPTIONS, "--runs", str(runs)]


def test_killed_at_a_random_moment_and_resumed_to_the_same_table(tmp_path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    # the first build: one run ends `failed` (an exception, as a fault of the machine would)
    evaluated: list[Path] = []
    failed_once: list[EvalJob] = []

    def evaluate_or_fail_once(job: EvalJob) -> EvalResult:
        evaluated.append(Path(job.workdir))
        if len(evaluated) == 2 and not failed_once:
            failed_once.append(job)
            return EvalResult(status="failed", error="OSError: a fault of this sitting")
        return evaluate_candidate(job)

    monkeypatch.setattr(executor_base, "evaluate_candidate", evaluate_or_fail_once)
    whole = runner.invoke(app, tabulate_args(tmp_path, runs))
    assert whole.exit_code == 0, whole.output
    first = runs / "00000-tabulate-four"
    broken = [r for r in read_rows(first / "four-digits") if r.status != "complete"]
    assert {(r.status, r.error) for r in broken} == {("failed", "OSError: a fault of this sitting")}
    # the second run: the first architecture's reference at seed 1 (the reference runs first)
    assert [(r.setting, r.seed) for r in broken] == [(REFERENCE, 1)]
    # --resume runs that run again, and only it
    failed_run, evaluated[:] = evaluated[1], []
    rerun = runner.invoke(app, ["tabulate", "--resume", str(first)])
    assert rerun.exit_code == 0, rerun.output
    assert evaluated == [failed_run] and "failed before, run again" in rerun.output
    monkeypatch.undo()
    table = Table.load(first / "four-digits")
    assert len(table.rows) == 4 * 5 * 2 and all(r.status == "complete" for r in table.rows)
    assert {"diffnas", "torch", "diffusers"} <= set(table.meta.versions)
    reference = table.setting(REFERENCE)
    assert len(reference.protocol["weights_sha256"]) == 64  # the extractor's weights, pinned
    # the build ends with proxy-check's summary of the whole space: the ceiling is the
    # reference's seed-to-seed tau (scipy on the table's rows), every setting's tau beside it
    summary = read_json(first / "summary.json")
    values = table.values(REFERENCE)
    ceiling = stats.kendalltau(*[[values[a][k] for a in table.archs()] for k in (0, 1)])[0]
    assert summary["ceiling"]["agreement"]["kendall_tau"]["value"] == pytest.approx(ceiling)
    assert summary["finished"] == 4 and len(summary["settings"]) == 4
    assert (first / "summary.md").is_file() and (first / "scatter.png").is_file()
    assert "Proxy settings against FID[classifier] (4 of 4 architectures" in rerun.output
    assert reference.recipe.steps == 4 and reference.spec.score.num_samples == 8

    # the same build in a child process, SIGKILLed once its table has some rows but not all
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the threads the tests train with
    command = [sys.executable, "-m", "diffnas", "--quiet", *tabulate_args(tmp_path, runs)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = runs / "00001-tabulate-four"
    deadline, rows = time.monotonic() + 300, 0
    while time.monotonic() < deadline and child.poll() is None:
        rows = (
            len(read_rows(second / "four-digits")) if (second / "four-digits.json").is_file() else 0
        )
        if rows >= 3:
            break
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.5))  # a random moment: mid-run, mid-write, or between
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    killed_rows = len(read_rows(second / "four-digits"))
    assert 0 < killed_rows < len(table.rows)  # it was stopped part-way
    refused = runner.invoke(app, ["tabulate", "--resume", str(second), "--seeds", "3"])
    assert refused.exit_code != 0 and "drop --seeds" in str(refused.exception)
    # where the runs go may change on resume (it changes no score; a pool would cost this test
    # its workers' start-up, and test_experiments_proxy_check shows a pool scores the same)
    resumed = runner.invoke(app, ["tabulate", "--resume", str(second), "--max-retries", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert read_json(second / "options.json")["max_retries"] == 3
    again = Table.load(second / "four-digits")

    def outcome(t: Table) -> dict:
        return {(r.arch_id, r.setting, r.seed): (r.status, r.score, r.final_loss) for r in t.rows}

    failed = [r for r in again.rows if r.status != "complete"]
    assert not failed, [(r.arch_id, r.setting, r.error) for r in failed]  # why, if it happens

    assert outcome(again) == outcome(table)  # the same numbers, every row once
    assert len(again.rows) == len(table.rows)
    assert len(again.meta.notes["sittings"]) == 2  # the killed sitting and the resumed one
    assert again.meta.command.startswith("diffnas --quiet tabulate --space")  # as typed
    # nothing is rerun once its rows are in: a second resume adds nothing
    csv_path = table_files(second / "four-digits")[0]
    before = csv_path.read_text()
    runner.invoke(app, ["tabulate", "--resume", str(second)])
    assert csv_path.read_text() == before
    assert not math.isnan(again.optimum()[1])

    # a reference that ranks itself too weakly gets more seeds on resume: only the new
    # reference runs train, and no finished row changes
    evaluated[:] = []
    monkeypatch.setattr(executor_base, "evaluate_candidate", evaluate_or_fail_once)
    grown = runner.invoke(app, ["tabulate", "--resume", str(second), "--reference-seeds", "3"])
    assert grown.exit_code == 0, grown.output
    assert sorted(p.name for p in evaluated) == ["reference-seed2"] * 4
    more = Table.load(second / "four-digits")
    assert more.seeds == [0, 1] and more.seeds_of(REFERENCE) == [0, 1, 2]
    assert {k: v for k, v in outcome(more).items() if k[2] < 2} == outcome(again)
    assert len(more.rows) == len(again.rows) + 4
    assert read_json(second / "options.json")["reference_seeds"] == 3
    # a dry run of one more tells what is left: seed 3 of the four references
    plan = runner.invoke(
        app, ["tabulate", "--resume", str(second), "--reference-seeds", "4", "--dry-run"]
    )
    assert '"runs": 32' in plan.output and '"runs_in_the_table": 28' in plan.output
    assert '"runs_to_go": 4' in plan.output
    assert read_json(second / "options.json")["reference_seeds"] == 3  # a dry run writes nothing
    fewer = runner.invoke(app, ["tabulate", "--resume", str(second), "--reference-seeds", "2"])
    assert "--reference-seeds may only add" in str(fewer.exception)
    assert read_json(second / "options.json")["reference_seeds"] == 3  # left as it was
