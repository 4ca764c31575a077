"""Screening before training in the search (`--screen M --screener NAME`), on a 12-architecture
space whose true scores come from a hand-made table (`screen_doubles`): no candidate is
trained, an executor double looks the scores up.

- a stub screener that knows the table makes the search train the table's top K first;
- screened-out candidates cost no training, are in the study, round files, status and summary;
- a kill -9 at two moments (mid-evaluation, mid-recording) and `--resume` give exactly what an
  uninterrupted search gives; the LLM screener's calls resume from and replay offline from
  `llm/calls.jsonl`;
- the Kendall tau in summary.json matches scipy on the study's predictions and scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from scipy import stats

from diffnas.cli.search_cmd import show_status
from diffnas.report.page import render_markdown
from diffnas.report.source import load_search
from diffnas.runs import read_json
from diffnas.search import screening
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space.search_space import load_space
from doubles import OpenAILoopback
from screen_doubles import StubScreener, TableExecutor, make_table, write_space

QUIET = Console(quiet=True)
HERE = Path(__file__).parent


def config(space: Path, **overrides: Any) -> SearchConfig:
    base: dict[str, Any] = dict(
        space=str(space), proposer="random", rounds=2, per_round=2, screen=6, screener="gp",
        promote=0, seed=1,
    )  # fmt: skip
    return SearchConfig(**{**base, **overrides})


def outcome(run_dir: Path) -> list[tuple]:
    """Every trial as (number, round, slot, status, architecture, score, prediction)."""
    memory = study_mod.load_memory(study_mod.open_study(run_dir))
    return [
        (
            t.number,
            t.round,
            t.slot,
            t.status,
            t.arch.key() if t.arch else None,
            t.score,
            t.predicted,
        )
        for t in memory
    ]


def test_a_screener_that_knows_the_table_trains_its_top_k_first(tmp_path: Path) -> None:
    space_file = write_space(tmp_path)
    table = make_table(load_space(space_file))
    assert len(table) == 12
    executor, stub = TableExecutor(table), StubScreener(table)
    cfg = config(space_file, screen=12)  # every architecture of the space, for 2 slots
    summary = SearchRun(
        cfg, tmp_path / "run", executor=executor, screener=stub, console=QUIET
    ).run()

    # round 1 sees the whole space and trains its best two; round 2 the next two
    # (screened-out architectures may be proposed again: they were never measured)
    assert [table[key] for key in executor.evaluated] == [1.0, 2.0, 3.0, 4.0]
    assert stub.calls == 2
    memory = study_mod.load_memory(study_mod.open_study(tmp_path / "run"))
    screened = [t for t in memory if t.status == "screened-out"]
    assert len(screened) == 10 + 8  # 12 - 2, then the 10 unmeasured - 2
    assert all(t.predicted == table[t.arch.key()] for t in screened)
    assert not any((tmp_path / "run" / "trials" / f"{t.number:05d}").exists() for t in screened)
    # round 2 asked for 12 but only 10 were new: the random proposer's 11th slot failed the gate
    assert summary["status_counts"] == {"complete": 4, "screened-out": 18, "rejected": 1}
    assert summary["origins"] == {"random": 4}  # only trained candidates count
    assert summary["compute"]["cpu_hours"] == pytest.approx(4 / 3600, abs=1e-6)
    # a perfect screener: tau +1 in each round and over both
    stub_summary = summary["screening"]["stub"]
    assert stub_summary["tau"] == 1.0 and stub_summary["screened_out"] == 18
    assert [r["tau"] for r in stub_summary["rounds"]] == [1.0, 1.0]
    entries = read_json(tmp_path / "run" / "rounds" / "round-000.json")["entries"]
    assert sorted(e["screen"]["rank"] for e in entries) == list(range(1, 13))
    assert {e["screen"]["selected"] for e in entries if e["screen"]["rank"] <= 2} == {True}


def test_summary_tau_is_scipys_on_the_studys_predictions(tmp_path: Path, capsys) -> None:
    space_file = write_space(tmp_path)
    table = make_table(load_space(space_file))
    cfg = config(space_file, rounds=4, per_round=3, screen=6, screener="gp", seed=3)
    run_dir = tmp_path / "run"
    summary = SearchRun(cfg, run_dir, executor=TableExecutor(table), console=QUIET).run()
    memory = study_mod.load_memory(study_mod.open_study(run_dir))
    pairs = [(t.predicted, t.score) for t in memory if t.evaluated and t.predicted is not None]
    gp = summary["screening"]["gp"]
    assert gp["pairs"] == len(pairs) >= 3  # rounds 2-4: the GP had 3 measured trials by then
    assert gp["tau"] == pytest.approx(stats.kendalltau(*zip(*pairs)).statistic)
    assert gp["rounds"][0]["pairs"] == 0  # round 1: nothing measured, the proposer's order kept
    info = read_json(run_dir / "rounds" / "round-000.json")["screening"]
    assert info["screener"] == "gp" and "proposer's order is kept" in info["info"]
    capsys.readouterr()
    show_status(run_dir)
    out = capsys.readouterr().out
    assert "screened-out" in out and "screened out by gp" in out
    assert f"Kendall tau of predicted vs measured {gp['tau']:+.2f}" in out
    # the report's facts carry the same line
    page = render_markdown([load_search(run_dir)], [])
    assert "screening (6 per round, gp)" in page
    assert f"Kendall tau of predicted vs measured {gp['tau']:+.2f}" in page


def test_pool_size_is_in_proportion_to_the_slots_asked() -> None:
    assert screening.pool_size(4, 4, 10) == 10
    assert screening.pool_size(1, 4, 10) == 3  # an asynchronous request for one free slot
    assert screening.pool_size(2, 2, 3) == 3


def kill_and_resume(tmp_path: Path, cfg: SearchConfig, table: dict, kill_at: str) -> Path:
    """Run the search in a child that SIGKILLs itself at `kill_at`, then resume it here."""
    run_dir = tmp_path / f"killed-{kill_at.replace(':', '-')}"
    (tmp_path / "config.json").write_text(cfg.model_dump_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, str(HERE / "screen_kill_search.py"), str(tmp_path / "config.json"),
         str(run_dir), kill_at],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == -9, child.stderr[-2000:]
    assert not (run_dir / "summary.json").exists()
    SearchRun(cfg, run_dir, executor=TableExecutor(table), console=QUIET).run()
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[SearchConfig, dict, Path]:
    """(config, table, run folder) of a screened search that ran without a kill."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    space_file = write_space(folder)
    table = make_table(load_space(space_file))
    # three rounds: the GP screens with measured trials (it needs 3) in round 3, after the kill
    cfg = config(space_file, rounds=3, per_round=2, screen=5)
    SearchRun(cfg, folder / "whole", executor=TableExecutor(table), console=QUIET).run()
    return cfg, table, folder / "whole"


@pytest.mark.parametrize("kill_at", ["evaluate:3", "screened-out:4"])
def test_a_kill_9_then_resume_gives_what_an_uninterrupted_search_gives(
    tmp_path: Path, uninterrupted, kill_at: str
) -> None:
    cfg, table, whole = uninterrupted
    resumed = kill_and_resume(tmp_path, cfg, table, kill_at)
    assert outcome(resumed) == outcome(whole)
    statuses = [o[3] for o in outcome(whole)]
    assert statuses.count("complete") == 6 and statuses.count("screened-out") >= 6
    assert read_json(whole / "rounds" / "round-002.json")["screening"]["info"].startswith("GP on")
    # screened-out candidates never trained, before or after the kill
    trained = sorted(p.name for p in (resumed / "trials").iterdir())
    assert trained == [f"{o[0]:05d}" for o in outcome(resumed) if o[3] == "complete"]
    for r in range(3):
        name = f"round-{r:03d}.json"
        assert read_json(resumed / "rounds" / name) == read_json(whole / "rounds" / name)


def loopback_answer(body: dict[str, Any]) -> str:
    """A deterministic "model" for the LLM screener: predicts the candidates' GMACs x 100
    (read from the prompt's candidate lines), so bigger nets are predicted worse."""
    prompt = body["messages"][-1]["content"]
    costs = [
        float(line.split("-> ")[1].split(" GMACs")[0])
        for line in prompt.splitlines()
        if line.startswith("candidate ")
    ]
    return json.dumps({"scores": [round(100 * c, 3) for c in costs]})


def test_the_llm_screener_resumes_from_its_record_and_replays_offline(
    tmp_path: Path, monkeypatch
) -> None:
    space_file = write_space(tmp_path)
    table = make_table(load_space(space_file))
    real = screening.screen_entries
    calls: list[int] = []

    def killed_in_round_2(*args: Any, **kwargs: Any) -> Any:
        # the screener's answer for round 2 is paid for and recorded; the process dies before
        # the round file is written
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return result

    cfg = config(space_file, screener="llm", llm="openai:test-model", llm_attempts=1)
    run_dir = tmp_path / "recorded"
    with OpenAILoopback(responder=loopback_answer) as server:
        live = cfg.model_copy(update={"base_url": server.base_url})
        monkeypatch.setattr(screening, "screen_entries", killed_in_round_2)
        with pytest.raises(KeyboardInterrupt):
            SearchRun(live, run_dir, executor=TableExecutor(table), console=QUIET).run()
        assert not (run_dir / "rounds" / "round-001.json").exists()
        paid = len(server.requests)
        monkeypatch.setattr(screening, "screen_entries", real)
        summary = SearchRun(live, run_dir, executor=TableExecutor(table), console=QUIET).run()
        assert len(server.requests) == paid == 2  # round 2's prediction came from the record
        schema = server.requests[0]["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["scores"]["minItems"] == 6
    assert summary["screening"]["llm"]["screened_out"] == 8
    first_round = read_json(run_dir / "rounds" / "round-000.json")
    predicted = [e["screen"]["predicted"] for e in first_round["entries"]]
    # the loopback read each cost as the prompt prints it (3 significant digits)
    assert predicted == [round(100 * float(f"{e['gmacs']:.3g}"), 3) for e in first_round["entries"]]
    # offline, no server: the replay makes the same requests, gets the same answers
    replayed = tmp_path / "replayed"
    offline = cfg.model_copy(update={"replay": str(run_dir)})
    again = SearchRun(offline, replayed, executor=TableExecutor(table), console=QUIET).run()
    assert outcome(replayed) == outcome(run_dir)
    assert again["llm"]["calls"] == 2 and again["screening"] == summary["screening"]


def test_the_async_schedule_screens_each_request_in_proportion(tmp_path: Path) -> None:
    space_file = write_space(tmp_path)
    table = make_table(load_space(space_file))
    executor, stub = TableExecutor(table), StubScreener(table)
    cfg = config(space_file, schedule="async", rounds=2, per_round=2, screen=4)
    summary = SearchRun(
        cfg, tmp_path / "run", executor=executor, screener=stub, console=QUIET
    ).run()
    # one slot: four requests for one candidate each, each obtaining ceil(1 x 4 / 2) = 2
    files = sorted((tmp_path / "run" / "rounds").glob("round-*.json"))
    assert [read_json(f)["asked"] for f in files] == [1, 1, 1, 1]
    assert [len(read_json(f)["entries"]) for f in files] == [2, 2, 2, 2]
    assert len(executor.evaluated) == 4 and summary["status_counts"]["screened-out"] == 4
    for f in files:  # the stub's better candidate of each pair is the one trained
        entries = read_json(f)["entries"]
        best = min(entries, key=lambda e: e["screen"]["predicted"])
        assert best["screen"]["selected"] and best["screen"]["rank"] == 1
