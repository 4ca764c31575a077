"""One conformance suite for every executor (inline, subprocess, pool, ray when importable):
the same result for the same job (score and feature space, whatever torch thread count the
executor gives its workers), failure reporting, kill handling, concurrency."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from diffnas.data.datasets import DataSpec
from diffnas.execute import make_executor
from diffnas.execute.base import Executor, InlineExecutor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import ATTEMPTS_FILE
from tiny_models import TINY_JOB_ARCH as ARCH
from tiny_models import TINY_JOB_SPEC as SPEC
from tiny_tables import FOUR_DATA, four_archs, make_table

KILLER = str(Path(__file__).with_name("killing_worker.py"))
BARRIER = str(Path(__file__).with_name("barrier_worker.py"))
CONCURRENT = ("pool", "ray")


def has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


EXECUTORS = ["inline", "subprocess", "pool"] + (["ray"] if has_ray() else [])


def job(
    tmp_path: Path, name: str, seed: int = 3, cache: Path | None = None, steps: int | None = None
) -> EvalJob:
    recipe = SPEC.train_recipe("ddpm", "digits")
    if steps is not None:
        recipe = recipe.model_copy(update={"steps": steps})
    return EvalJob(
        arch=ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64), spec=SPEC,
        recipe=recipe, seed=seed,
        workdir=str(tmp_path / name), cache_dir=str(cache or tmp_path / "cache"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, no dashboard."""
    if not has_ray():
        yield None
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Start both Ray workers now: on a busy 2-core machine the second one otherwise comes up
    # seconds after the first task, and a round's candidates would not meet in time.
    warm = ray.remote(num_cpus=1)(lambda: __import__("time").sleep(0.5))
    ray.get([warm.remote() for _ in range(2)])
    yield ray
    ray.shutdown()


def make(name: str, request, **options) -> Executor:
    if name == "ray":
        request.getfixturevalue("ray_instance")  # the executor joins the running instance
    if name == "pool":
        options.setdefault("gpus", [])  # CPU workers, whatever this machine has
        options.setdefault("workers", 2)
    executor = make_executor(name, **options)
    request.addfinalizer(executor.close)
    return executor


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> EvalResult:
    """The inline result of the job: every executor must give exactly this score. It runs with
    more torch threads than a pool worker gets (cores // 2), and every executor trains the
    classifier extractor anew in its own cache: a feature space that depended on the thread
    count (issue 15: RFIDs 1.4x apart) would show here."""
    threads = torch.get_num_threads()
    torch.set_num_threads((os.cpu_count() or 1) // 2 + 1)
    try:
        result = InlineExecutor().run(job(tmp_path_factory.mktemp("reference"), "ref"))
    finally:
        torch.set_num_threads(threads)
    assert result.status == "complete"
    return result


def same_score(result: EvalResult, reference: EvalResult) -> None:
    """The same value, measured in the same feature space (extractor and weights hash)."""
    assert result.status == "complete", result.error
    assert result.score == pytest.approx(reference.score, rel=1e-6)  # a pure function of its job
    protocol, expected = result.scores["rfid"]["protocol"], reference.scores["rfid"]["protocol"]
    assert protocol == expected


@pytest.mark.parametrize("name", EXECUTORS)
def test_same_result_for_same_job(tmp_path, request, name, reference) -> None:
    executor = make(name, request)
    result = executor.run(job(tmp_path, "t"))
    same_score(result, reference)
    saved = json.loads((tmp_path / "t" / "result.json").read_text())
    assert saved["score"] == result.score
    assert json.loads((tmp_path / "t" / "job.json").read_text())["seed"] == 3
    # cost accounting: where it ran and its CPU-seconds: some, and at most wall time x cores
    assert result.device == "cpu"
    assert 0 < result.device_s <= result.wall_s * (os.cpu_count() or 1) + 0.1
    assert executor.run(job(tmp_path, "t")) == result  # finished: read back, not recomputed


@pytest.mark.parametrize("name", EXECUTORS)
def test_failure_is_reported_with_reason(tmp_path, request, name) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder belongs")
    result = make(name, request).run(job(tmp_path, "t", cache=blocker))
    assert result.status == "failed"
    assert "Error" in (result.error or "") and "not-a-folder" in result.error


@pytest.mark.parametrize("name", [n for n in EXECUTORS if n != "inline"])
def test_killed_worker_is_retried_then_completes(tmp_path, request, name, reference) -> None:
    executor = make(name, request, command=[sys.executable, KILLER, "1"], max_retries=2)
    result = executor.run(job(tmp_path, "t"))
    same_score(result, reference)
    attempts = (tmp_path / "t" / ATTEMPTS_FILE).read_text().splitlines()
    assert len(attempts) == 1 and "SIGKILL" in attempts[0]


@pytest.mark.parametrize("name", [n for n in EXECUTORS if n != "inline"])
def test_worker_killed_every_time_fails_after_retries(tmp_path, request, name) -> None:
    # killed at once, every time: the limit and the reason do not need training before each
    executor = make(name, request, command=[sys.executable, KILLER, "99", "now"], max_retries=1)
    result = executor.run(job(tmp_path, "t"))
    assert result.status == "failed"  # never stuck running
    assert "SIGKILL" in result.error and "2 attempts" in result.error
    assert len((tmp_path / "t" / ATTEMPTS_FILE).read_text().splitlines()) == 2


@pytest.mark.parametrize("name", [n for n in EXECUTORS if n in CONCURRENT])
def test_round_of_four_runs_concurrently(tmp_path, request, name, reference) -> None:
    # every worker waits at a barrier until two have started: run one after another, the first
    # never passes it (exit 3 on each retry) - a check that does not depend on timing
    command = [sys.executable, BARRIER, str(tmp_path / "barrier"), "2"]
    executor = make(name, request, command=command, max_retries=0)
    jobs = [job(tmp_path, "t0")] + [job(tmp_path, f"t{i}", 10 + i) for i in (1, 2, 3)]
    results = dict(executor.run_many(jobs))
    assert sorted(results) == [0, 1, 2, 3]
    assert all(r.status == "complete" for r in results.values()), [
        r.error for r in results.values()
    ]
    same_score(results[0], reference)
    pids = set()
    for i in range(4):
        (line,) = (tmp_path / f"t{i}" / "worker.jsonl").read_text().splitlines()
        pids.add(json.loads(line)["pid"])
    assert len(pids) == 4  # a fresh process per candidate


def test_sequential_executor_starts_a_job_only_when_asked(tmp_path) -> None:
    """inline/subprocess: run_many evaluates lazily, so a search tells each result first."""
    jobs = [job(tmp_path, f"t{i}") for i in range(2)]
    results = InlineExecutor().run_many(jobs)
    index, first = next(results)
    assert index == 0 and first.status == "complete"
    assert not (tmp_path / "t1").exists()


def test_table_executor_keeps_the_contract_where_it_applies(tmp_path) -> None:
    """`table:PATH` answers by lookup: the same result for the same job, result.json written and
    reused, a failure with its reason, and it is sequential (run_many starts a job only when
    asked). Kill handling and concurrency do not apply: it starts no process."""
    table = make_table(tmp_path / "t", lambda a, setting, seed: 10.0 * a + seed)
    executor = make_executor(f"table:{table.stem}")
    setting = table.setting("s2-rfid-n8-s2")
    archs = list(four_archs().values())

    def lookup(i: int, name: str, arch=None) -> EvalJob:
        return EvalJob(
            arch=arch or archs[i].arch, objective="ddpm", data=FOUR_DATA, spec=setting.spec,
            recipe=setting.recipe, seed=0, workdir=str(tmp_path / name), cache_dir=str(tmp_path),
        )  # fmt: skip

    first = executor.run(lookup(1, "a"))
    assert first.status == "complete" and first.score in (10.0, 11.0)
    assert executor.run(lookup(1, "b")).score == first.score
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert saved["score"] == first.score and (tmp_path / "a" / "job.json").is_file()
    (tmp_path / "a" / "result.json").write_text(json.dumps({**saved, "score": -1.0}))
    assert executor.run(lookup(1, "a")).score == -1.0  # a finished job's result is reused
    stranger = ARCH.model_copy(update={"base_channels": 16})
    failed = executor.run(lookup(0, "c", stranger))
    assert failed.status == "failed" and "not in table" in failed.error
    results = executor.run_many([lookup(2, "d"), lookup(3, "e")])
    assert next(results)[0] == 0 and not (tmp_path / "e").exists()
