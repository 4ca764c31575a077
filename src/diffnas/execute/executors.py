"""Executors run `evaluate_candidate(job)`; the result is also left in `workdir/result.json`."""

from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path

from diffnas.childproc import die_with_parent
from diffnas.errors import UserError
from diffnas.execute.job import EvalJob, EvalResult, evaluate_candidate
from diffnas.runs import read_json, write_json

JOB_FILE = "job.json"
RESULT_FILE = "result.json"


class Executor(ABC):
    """Runs evaluation jobs. A finished job's result.json is reused, never recomputed."""

    name = "base"

    def run(self, job: EvalJob) -> EvalResult:
        workdir = Path(job.workdir)
        done = workdir / RESULT_FILE
        if done.is_file():
            return EvalResult.model_validate(read_json(done))
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(workdir / JOB_FILE, job.model_dump(mode="json"))
        result = self._run(job)
        write_json(done, result.model_dump(mode="json"))
        return result

    @abstractmethod
    def _run(self, job: EvalJob) -> EvalResult: ...


class InlineExecutor(Executor):
    """In this process: no start-up cost; a hard crash (segfault) takes the search with it."""

    name = "inline"

    def _run(self, job: EvalJob) -> EvalResult:
        return evaluate_candidate(job)


class SubprocessExecutor(Executor):
    """In a child process (`python -m diffnas.execute.worker WORKDIR`): isolates crashes and memory."""

    name = "subprocess"

    def _run(self, job: EvalJob) -> EvalResult:
        workdir = Path(job.workdir)
        with open(workdir / "worker.log", "a") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "diffnas.execute.worker", str(workdir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        result_file = workdir / RESULT_FILE
        if result_file.is_file():
            return EvalResult.model_validate(read_json(result_file))
        return EvalResult(
            status="failed",
            error=f"worker exited with code {proc.returncode}; see {workdir / 'worker.log'}",
        )


def make_executor(name: str) -> Executor:
    executors = {"inline": InlineExecutor, "subprocess": SubprocessExecutor}
    if name not in executors:
        raise UserError(
            f"executor {name!r} is not known; allowed: {', '.join(executors)}.", field="executor"
        )
    return executors[name]()
