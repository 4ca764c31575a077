"""Executor conformance: every executor gives the same result for the same job and reuses a finished one."""

from __future__ import annotations

import json

import pytest

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute import InlineExecutor, SubprocessExecutor, make_executor
from diffnas.execute.job import EvalJob
from tiny_models import TINY_JOB_ARCH as ARCH
from tiny_models import TINY_JOB_SPEC as SPEC


def job(tmp_path, name: str) -> EvalJob:
    return EvalJob(
        arch=ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64), spec=SPEC,
        recipe=SPEC.train_recipe("ddpm", "digits"), seed=3,
        workdir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "executor", [InlineExecutor(), SubprocessExecutor()], ids=["inline", "subprocess"]
)
def test_executor_runs_job_and_reuses_result(tmp_path, executor) -> None:
    reference = InlineExecutor().run(job(tmp_path, "reference"))
    result = executor.run(job(tmp_path, "under-test"))
    assert result.status == "complete" and reference.status == "complete"
    assert result.score == pytest.approx(reference.score, rel=1e-6)  # a pure function of the job
    saved = json.loads((tmp_path / "under-test" / "result.json").read_text())
    assert saved["score"] == result.score
    assert json.loads((tmp_path / "under-test" / "job.json").read_text())["seed"] == 3
    again = executor.run(job(tmp_path, "under-test"))  # finished: read back, not recomputed
    assert again == result


def test_unknown_executor() -> None:
    with pytest.raises(UserError, match="allowed: inline, subprocess, pool, ray"):
        make_executor("slurm")
