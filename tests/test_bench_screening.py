"""Smoke test of benchmarks/bench_screening.py on a hand-made 4-architecture table
(`tiny_tables`): every condition runs against the table executor, with the LLM screener
answered by a loopback server, and the figures it reports are checked against the run folders
and the table's scores, recomputed here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from diffnas.search import study as study_mod
from doubles import OpenAILoopback
from tiny_tables import REFERENCE, four_archs, make_table

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_screening.py"
REFERENCE_BY_ARCH = [4.0, 3.0, 2.0, 1.0]  # the 4th architecture is the optimum


def score(arch: int, setting: str, seed: int) -> float:
    """Reference: 4, 3, 2, 1 (+ 0.1 per seed); proxies: the same order with a twist."""
    if setting == REFERENCE:
        return REFERENCE_BY_ARCH[arch] + 0.1 * seed
    return [3.0, 4.0, 2.0, 1.0][arch] + 0.2 * seed


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_screening", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict(body: dict[str, Any]) -> str:
    """A "model" that predicts 10 x blocks + 1 without middle attention, per candidate line."""
    values = []
    for line in body["messages"][-1]["content"].splitlines():
        if line.startswith("candidate "):
            arch = json.loads(line.split(": ", 1)[1].split(" -> ")[0])
            values.append(10.0 * arch["num_res_blocks"] + (not arch["mid_attention"]))
    return json.dumps({"scores": values})


def test_the_screening_benchmark_runs_every_condition_on_a_hand_made_table(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    stem = tmp_path / "four"
    make_table(stem, score)
    monkeypatch.setenv("BENCH_KEY", "sk-bench-test")
    bench = load_bench()
    out = tmp_path / "out"
    with OpenAILoopback(responder=predict) as server:
        results = bench.main(
            [str(stem), "--seeds", "2", "--rounds", "2", "--per-round", "1", "--screen", "2",
             "--proposer", "random", "--llm", "openai:test-model", "--base-url",
             server.base_url, "--api-key-env", "BENCH_KEY", "--out", str(out),
             "--plot", str(tmp_path / "regret.png")]
        )  # fmt: skip
        asked = len(server.requests)
    assert list(results["conditions"]) == list(bench.CONDITIONS)
    assert asked > 0  # the LLM screeners were asked
    ids = list(four_archs())
    reference = {a: sum(score(i, REFERENCE, s) for s in (0, 1)) / 2 for i, a in enumerate(ids)}
    optimum = min(reference.values())
    top3 = set(sorted(reference, key=reference.get)[:3])
    for condition, searches in results["searches"].items():
        assert len(searches) == 2
        for row in searches:
            memory = study_mod.load_memory(
                study_mod.open_study(out / condition / f"seed-{row['seed']:04d}")
            )
            measured = [t for t in memory if t.status == "complete"]
            returned = min(measured, key=lambda t: (t.score, t.number))
            assert row["regret"] == pytest.approx(reference[returned.arch.arch_hash()] - optimum)
            own = [t for t in sorted(measured, key=lambda t: t.number) if t.round >= 0]
            assert row["evaluations"] == len(own) == 2  # the same budget in every condition
            imported = [t for t in measured if t.round < 0]
            if any(t.arch.arch_hash() in top3 for t in imported):
                expected = 0
            else:
                hits = [i + 1 for i, t in enumerate(own) if t.arch.arch_hash() in top3]
                expected = hits[0] if hits else None
            assert row["evaluations_to_top3"] == expected
            assert (condition == "warm-start") == bool(imported)
            if condition.startswith("screen-"):
                assert row["screened_out"] == 2  # one of two per round
    # the table tau: every prediction of the LLM screener against the mean proxy score
    proxy = {a: sum(score(i, "s2-rfid-n8-s2", s) for s in (0, 1)) / 2 for i, a in enumerate(ids)}
    for row in results["searches"]["screen-llm"]:
        memory = study_mod.load_memory(
            study_mod.open_study(out / "screen-llm" / f"seed-{row['seed']:04d}")
        )
        pairs = [
            (t.predicted, proxy[t.arch.arch_hash()]) for t in memory if t.predicted is not None
        ]
        expected = stats.kendalltau(*zip(*pairs)).statistic if len(pairs) >= 3 else None
        assert row["tau_table"] == (pytest.approx(expected) if expected is not None else None)
    for aggregate in results["conditions"].values():
        regret = aggregate["regret"]
        assert regret["low"] <= regret["mean"] <= regret["high"]
    assert "| screen-llm+gp |" in capsys.readouterr().out
    assert (tmp_path / "regret.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["budget"] == 2
    # a second call reads the finished run folders instead of searching again
    again = bench.main(
        [str(stem), "--seeds", "2", "--rounds", "2", "--per-round", "1", "--screen", "2",
         "--proposer", "random", "--out", str(out), "--conditions", "screen-gp"]
    )  # fmt: skip
    assert again["searches"]["screen-gp"] == results["searches"]["screen-gp"]
