"""Executors: the factory, and how pool and pinned children are pinned to a card or CPU threads.

The conformance of every executor (the same result for the same job, a finished one reused,
failures, kills, concurrency) is in test_execute_conformance.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute import make_executor
from diffnas.execute.job import EvalJob
from diffnas.execute.job_folder import write_job
from diffnas.execute.pool import PoolExecutor
from diffnas.execute.process import run_pinned
from tiny_models import TINY_JOB_ARCH as ARCH
from tiny_models import TINY_JOB_SPEC as SPEC


def job(tmp_path, name: str) -> EvalJob:
    return EvalJob(
        arch=ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64), spec=SPEC,
        recipe=SPEC.train_recipe("ddpm", "digits"), seed=3,
        workdir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


def test_unknown_executor() -> None:
    with pytest.raises(UserError, match="allowed: inline, subprocess, pool, ray"):
        make_executor("slurm")


# A stand-in worker: reports the pinning it was started with (environment, job.json's device).
REPORT_PINNING = """
import json, os, pathlib, sys
folder = pathlib.Path(sys.argv[1])
seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "DIFFNAS_DEVICE_LABEL",
        "DIFFNAS_DEVICE_SHARE", "DIFFNAS_TORCH_THREADS", "OMP_NUM_THREADS")}
seen["job_device"] = json.loads((folder / "job.json").read_text())["spec"]["device"]
(folder / "result.json").write_text(json.dumps({"status": "complete", "score": 1.0, "train": seen}))
"""
SEE_PINNING = (sys.executable, "-c", REPORT_PINNING)


def auto_job(tmp_path, name: str) -> EvalJob:
    """A job that may use a GPU (`auto`): the pinning decides where it runs."""
    spec = SPEC.model_copy(update={"device": "auto"})
    return job(tmp_path, name).model_copy(update={"spec": spec})


def test_pinned_child_sees_one_card_or_none(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DIFFNAS_DEVICE_SHARE", raising=False)
    gpu_dir = write_job(auto_job(tmp_path, "gpu"))
    on_card = run_pinned(gpu_dir, gpu="1", share=0.25, command=SEE_PINNING)
    assert on_card.train["CUDA_VISIBLE_DEVICES"] == "1"  # that card alone, as its cuda:0
    assert on_card.train["DIFFNAS_DEVICE_LABEL"] == "cuda:1"
    assert on_card.train["DIFFNAS_DEVICE_SHARE"] == "0.2500"
    cpu_dir = write_job(auto_job(tmp_path, "cpu"))
    on_cpu = run_pinned(cpu_dir, gpu=None, threads=3, command=SEE_PINNING)
    assert (
        on_cpu.train["DIFFNAS_DEVICE_LABEL"] == "cpu" and on_cpu.train["CUDA_VISIBLE_DEVICES"] == ""
    )
    assert on_cpu.train["DIFFNAS_TORCH_THREADS"] == on_cpu.train["OMP_NUM_THREADS"] == "3"
    assert on_cpu.train["job_device"] == "auto" and on_cpu.train["DIFFNAS_DEVICE_SHARE"] is None


def test_pool_pins_children_to_the_cards_it_was_given(tmp_path, monkeypatch) -> None:
    # this process sees physical cards 4 and 6 as its 0 and 1; a child must be told "6" for 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    replaced = []  # every file this process wrote atomically (diffnas.runs.write_json)
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (replaced.append(dst), real_replace(src, dst))
    )
    pool = PoolExecutor(gpus=[1], command=SEE_PINNING)
    try:
        result = pool.run(auto_job(tmp_path, "pooled"))
    finally:
        pool.close()
    assert result.train["CUDA_VISIBLE_DEVICES"] == "6"
    assert result.train["DIFFNAS_DEVICE_LABEL"] == "cuda:6"
    assert result.train["job_device"] == "cuda"  # the card is the child's only one, its cuda
    # job.json is written once, as the job runs: the device the child read is the one recorded
    assert [Path(p).name for p in replaced].count("job.json") == 1
    assert json.loads((tmp_path / "pooled" / "job.json").read_text())["spec"]["device"] == "cuda"


def test_pool_leaves_a_cpu_job_as_it_is(tmp_path) -> None:
    pool = PoolExecutor(gpus=[], workers=1, command=SEE_PINNING)
    try:
        result = pool.run(auto_job(tmp_path, "on-cpu"))
    finally:
        pool.close()
    assert result.train["job_device"] == "auto" and result.train["CUDA_VISIBLE_DEVICES"] == ""
    assert result.train["DIFFNAS_DEVICE_LABEL"] == "cpu"


def test_a_ray_task_works_in_the_run_folder_only_where_it_sees_the_job(tmp_path) -> None:
    """The task body alone (no Ray needed): a node that sees the driver's job.json works in the
    trial's folder; one that does not evaluates in a temporary folder and returns its files."""
    from diffnas.execute.ray_executor import evaluate_in_task

    elsewhere = auto_job(tmp_path, "elsewhere")  # its job.json is on the driver's machine only
    payload = evaluate_in_task(elsewhere.model_dump(mode="json"), 0, SEE_PINNING, 0.0)
    assert payload["result"]["status"] == "complete"
    assert payload["result"]["train"]["job_device"] == "auto"
    assert set(payload["artifacts"]) == {"result.json", "worker.log"}  # not the temporary job
    assert not (tmp_path / "elsewhere").exists()
    here = write_job(auto_job(tmp_path, "here"))
    payload = evaluate_in_task(
        auto_job(tmp_path, "here").model_dump(mode="json"), 0, SEE_PINNING, 0.0
    )
    assert payload["artifacts"] == {} and (here / "result.json").is_file()
