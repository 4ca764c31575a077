"""The search loop on the concurrent pool: a round's candidates at once, killed workers retried,
every candidate told exactly once, and the search's compute in the summary and status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.execute.job_folder import ATTEMPTS_FILE
from diffnas.execute.pool import PoolExecutor
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun

KILLER = str(Path(__file__).with_name("killing_worker.py"))
TINY_EVAL = EvalSpec(
    recipe="proxy",
    recipe_overrides={"steps": 8, "batch_size": 8, "log_every": 4, "checkpoint_every": 4},
    score=ScoreSpec(num_samples=16, steps=2, batch_size=16),
    device="cpu",
)


def test_pool_search_with_killed_workers_completes_every_candidate_once(tmp_path) -> None:
    config = SearchConfig(
        space="tiny", data="digits", data_subset=200, proposer="random", rounds=1, per_round=4,
        promote=0, proxy=TINY_EVAL, final=TINY_EVAL, executor="pool", workers=2,
    )  # fmt: skip
    # every candidate's first worker process dies by SIGKILL as it starts, the retry finishes it
    # (a kill mid-training and the resume from its checkpoint: test_execute_conformance)
    pool = PoolExecutor(
        workers=2, gpus=[], command=[sys.executable, KILLER, "1", "now"], max_retries=1
    )
    run_dir = tmp_path / "run"
    summary = SearchRun(config, run_dir, executor=pool).run()
    memory = study_mod.load_memory(study_mod.open_study(run_dir))
    assert [t.number for t in memory] == [0, 1, 2, 3]
    assert all(t.status == "complete" for t in memory)
    assert len({t.arch.arch_hash() for t in memory}) == 4
    for t in memory:
        folder = run_dir / "trials" / f"{t.number:05d}"
        assert len((folder / ATTEMPTS_FILE).read_text().splitlines()) == 1  # killed once
        assert len((folder / "worker.jsonl").read_text().splitlines()) == 1  # finished once
        assert t.device == "cpu" and t.device_s > 0
    total_s = sum(t.device_s for t in memory)
    assert summary["compute"]["gpu_hours"] == 0
    assert abs(summary["compute"]["cpu_hours"] - total_s / 3600) < 1e-5
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["compute"] == summary["compute"]
