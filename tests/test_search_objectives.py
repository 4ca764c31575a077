"""Searching on measured latency: two objectives, a latency budget at the gate, the front
promoted and recorded, a kill -9 in the middle; the options refused before a run folder exists.

The in-process search measures latency with a deterministic fake (timing on a shared CPU is
noise); the kill -9 search runs the real measurement of its tiny candidates.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.model.cost import measure_cost
from diffnas.report.page import write_report
from diffnas.report.terminal import print_status
from diffnas.search import study as study_mod
from diffnas.search.loop import SearchRun
from diffnas.search.plan import resumed_config
from diffnas.space.references import get_reference
from diffnas.train.latency import Latency
from doubles import OpenAILoopback
from test_search_loop import REF, SMALL, SMALL2, SPACE, answer, config

WIDE = {**REF, "num_res_blocks": 2}  # over the GMACs band, yet fast by the fake
SLOW = {**REF, "base_channels": 48, "channel_mult": [1, 2, 3], "num_res_blocks": 2, "head_channels": 16}  # fmt: skip


def fake_ms(arch) -> float:
    return arch.base_channels / 4 + arch.num_res_blocks


def fake_measure(arch, settings) -> Latency:
    ms = fake_ms(arch)
    return Latency(
        arch_hash=arch.arch_hash(), device_name="fake", settings=settings, torch="-",
        ms=ms, runs_ms=[ms],
    )  # fmt: skip


def non_dominated(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trial numbers of the points nothing else is at least as good as on both, better on one."""
    return {
        n
        for n, (s, c) in points.items()
        if not any(
            s2 <= s and c2 <= c and (s2, c2) != (s, c) for m, (s2, c2) in points.items() if m != n
        )
    }


def test_two_objective_search_with_a_latency_budget(tmp_path) -> None:
    assert measure_cost(SPACE.complete(WIDE)).gmacs > SPACE.budget.max_gmacs
    assert fake_ms(SPACE.complete(SLOW)) == 14.0
    with OpenAILoopback() as server:
        server.push_text(answer(SMALL, SLOW))
        server.push_text(answer(WIDE, SMALL2))
        cfg = config(
            llm="openai:test-model", base_url=server.base_url, rounds=2, max_repairs=0,
            promote=2, objectives="score,latency", latency_budget_ms=10.5,
        )  # fmt: skip
        run_dir = tmp_path / "runs" / "00000-search"
        summary = SearchRun(cfg, run_dir, measure_latency=fake_measure).run()
        second_request = server.requests[1]["messages"][-1]["content"]

    study = study_mod.open_study(run_dir)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    memory = study_mod.load_memory(study)
    by_status = {t.status: [] for t in memory}
    for t in memory:
        by_status[t.status].append(t)
    (refused,) = by_status["rejected"]
    assert refused.reason == (
        "measured 14 ms per forward pass (batch 1, cpu, fp32, 1 thread), 33% over the 10.5 ms bound"
    )
    assert refused.latency_ms == 14.0
    complete = by_status["complete"]
    assert len(complete) == 3  # WIDE went to training: the latency bound replaced the band
    for t in complete:
        assert t.latency_ms == fake_ms(t.arch)
        frozen = study.trials[t.number]
        assert frozen.values == [t.score, t.latency_ms]  # the study's two objectives
    # the LLM saw the latency of each trial, the front and the bound in place of the band
    assert "Pareto front so far" in second_request and "trial 0" in second_request
    assert "5 ms" in second_request  # SMALL's measured latency in the memory
    assert (  # the reference, judged by the same bound
        "measured 9 ms per forward pass (batch 1, cpu, fp32, 1 thread), within the 10.5 ms "
        "bound (86% of it)" in second_request
    )
    assert "at most 10.5 ms per forward pass (measured: batch 1, cpu, fp32, 1 thread)" in (
        second_request
    )
    # the front: written here, from the study's values
    expected = non_dominated({t.number: (t.score, t.latency_ms) for t in complete})
    assert {f["trial"] for f in summary["front"]} == expected
    assert summary["objectives"] == ["score", "latency"]
    # measured once each: the four proposed and the reference the prompt shows
    assert summary["latency"]["budget_ms"] == 10.5 and summary["latency"]["measured"] == 5
    promoted = {f["trial"] for f in summary["final"]}
    assert promoted <= expected and len(promoted) == min(2, len(expected))
    assert all(f["status"] == "complete" for f in summary["final"])
    # status: the front marked, the latency column shown
    console = Console(width=200, record=True, force_terminal=False)
    print_status(run_dir, console)
    text = console.export_text()
    assert "+ Pareto front of score and latency" in text
    marked = {int(m.group(1)) for m in re.finditer(r"^ *(\d+) .* \S+[*+] ", text, re.M)}
    assert marked == expected
    assert re.search(r"^ *# +rd .* ms +score ", text, re.M)  # the latency column


def test_multi_objective_search_resumes_after_sigkill_with_a_real_measurement(tmp_path) -> None:
    """The search's kill -9 test (also of the rounds loop: every trial exactly once, the
    interrupted one finished in its own folder, the completed one not evaluated again), on a
    two-objective search whose latencies are really measured and cached."""
    runs = tmp_path / "runs"
    args = [
        sys.executable, "-m", "diffnas", "search", "--proposer", "random", "--space", "micro",
        "--data-subset", "200", "--rounds", "2", "--per-round", "2", "--proxy-steps", "40",
        "--set", "log_every=2", "--proxy-batch-size", "8", "--score-samples", "16", "--score-steps", "2", "--promote", "0",
        "--device", "cpu", "--runs", str(runs), "--objectives", "score,latency",
        "--latency-runs", "2", "--latency-warmup", "1", "--latency-threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(runs.glob("*/trials/00001/train/metrics.jsonl")):
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = next(runs.glob("*-search-*"))
    interrupted = study_mod.load_memory(study_mod.open_study(run_dir))
    assert [t.status for t in interrupted][:2] == ["complete", "running"]
    first_score = interrupted[0].score
    cached_before = {p.name: p.read_text() for p in (runs / "cache" / "latency").glob("*.json")}
    # round 1's two candidates measured at the gate, and the reference its prompt line shows
    assert len(cached_before) == 3

    resumed = subprocess.run(
        [sys.executable, "-m", "diffnas", "search", "--resume", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    study = study_mod.open_study(run_dir)
    memory = study_mod.load_memory(study)
    assert [t.number for t in memory] == [0, 1, 2, 3]
    assert sorted((t.round, t.slot) for t in memory) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(t.status == "complete" for t in memory)
    assert memory[0].score == first_score  # not evaluated again
    assert len({t.arch.arch_hash() for t in memory}) == 4
    # the interrupted trial finished in its own folder
    status = json.loads((run_dir / "trials" / "00001" / "train" / "status.json").read_text())
    assert status["status"] == "complete"
    cached = {p.name: p.read_text() for p in (runs / "cache" / "latency").glob("*.json")}
    assert len(cached) == 5 and all(cached[name] == text for name, text in cached_before.items())
    measured = {
        Latency.model_validate_json(text).arch_hash: Latency.model_validate_json(text)
        for text in cached.values()
    }
    reference = get_reference("micro-digits").arch_hash()
    assert set(measured) == {t.arch.arch_hash() for t in memory} | {reference}
    for t in memory:
        real = measured[t.arch.arch_hash()]
        assert t.latency_ms == pytest.approx(real.ms, abs=1e-4) and real.ms > 0
        assert real.settings.threads == 1 and real.settings.runs == 2
        assert study.trials[t.number].values == [t.score, t.latency_ms]
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = non_dominated({t.number: (t.score, t.latency_ms) for t in memory})
    assert {f["trial"] for f in summary["front"]} == expected
    report = write_report([run_dir], tmp_path / "report")
    assert {p.name for p in report.plots} >= {"score-vs-latency.png", "hypervolume.png"}


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objectives", "latency,score"], "give score, score,latency or score,macs"),
        (["--objectives", "score,params"], "objectives.1='params'"),
        (["--objectives", "score,macs", "--halving-rungs", "2"], "single-objective"),
        (["--budget-latency-ms", "0"], "latency_budget_ms=0.0"),
        (["--budget-latency-ms", "5", "--latency-device", "tpu"], "--latency-device 'tpu'"),
        (["--objectives", "score,latency", "--latency-dtype", "fp64"], "latency.dtype='fp64'"),
        (["--objectives", "score,latency", "--latency-runs", "0"], "latency.runs=0"),
    ],
)
def test_bad_objective_and_latency_options_are_refused_before_a_run_folder(
    tmp_path, args, message
) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["search", "--proposer", "random", "--runs", str(runs), "--data-subset", "50", *args]
    )
    assert result.exit_code != 0
    assert message in str(result.exception)
    assert not runs.exists()


def test_a_run_folder_from_before_objectives_resumes_single_objective(tmp_path) -> None:
    options = config().model_dump(mode="json")
    for key in ("objectives", "latency_budget_ms", "latency"):
        del options[key]
    (tmp_path / "options.json").write_text(json.dumps(options))
    resumed = resumed_config(tmp_path)
    assert resumed.objectives == ["score"] and not resumed.measures_latency
    assert resumed.cost_objective is None
