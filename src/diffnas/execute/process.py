"""Worker processes: a job evaluated in a child of its own (`python -m diffnas.execute.worker
WORKDIR`, see worker.py; a CPU job forked warm from launcher.py, the same in milliseconds),
pinned to one card or to a share of the CPU cores, and started again when it dies without a
result. The subprocess, pool, Ray and queue executors all run their jobs
this way; `SubprocessExecutor` is the plainest of them, one job after another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from diffnas.childproc import describe_exit, die_with_parent
from diffnas.errors import UserError
from diffnas.execute import launcher
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import (
    ATTEMPTS_FILE,
    USER_ERROR_EXIT,
    USER_ERROR_FILE,
    WORKER_OUTPUT,
    finished_result,
)
from diffnas.execute.worker import WORKER_COMMAND
from diffnas.runs import append_jsonl

DEFAULT_MAX_RETRIES = 2


def run_worker_process(
    workdir: str | Path,
    *,
    env: dict[str, str] | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
    device: str | None = None,
) -> EvalResult:
    """Evaluate `workdir/job.json` in a child process of its own (`command WORKDIR`; the
    default command's CPU jobs forked warm by launcher.py).

    A child that dies without a result (killed, out of memory, a segfault) is started again,
    up to `max_retries` times; the trainer resumes from its checkpoint. After that the job is
    `failed` with the reason. A configuration error in the child is raised here as UserError.
    """
    workdir = Path(workdir)
    start = time.perf_counter()
    reasons: list[str] = []
    job_env = dict(os.environ) if env is None else env
    warm = tuple(command) == WORKER_COMMAND and launcher.available(job_env)
    for attempt in range(max_retries + 1):
        if warm:
            returncode = launcher.run_warm(workdir, job_env, workdir / WORKER_OUTPUT)
        else:
            with open(workdir / WORKER_OUTPUT, "a") as log:
                returncode = subprocess.run(
                    [*command, str(workdir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                ).returncode
        result = finished_result(workdir)
        if result is not None:
            return result
        user_error = workdir / USER_ERROR_FILE
        if returncode == USER_ERROR_EXIT and user_error.is_file():
            raise UserError(user_error.read_text())
        reason = f"worker process {describe_exit(returncode)} before writing its result"
        reasons.append(reason)
        append_jsonl(
            workdir / ATTEMPTS_FILE,
            {
                "attempt": attempt,
                "returncode": returncode,
                "reason": reason,
                "time": time.time(),
            },
        )
    wall = round(time.perf_counter() - start, 3)
    return EvalResult(
        status="failed",
        error=f"{reasons[-1]} on each of {len(reasons)} attempts; see {workdir / WORKER_OUTPUT}",
        wall_s=wall,
        device=device,
    )


def on_card(job: EvalJob) -> EvalJob:
    """`job` as a worker pinned to one card runs it: that card is the child's only one, its
    `cuda` (the pool and Ray give this job to `run_pinned` with a `gpu`)."""
    return job.model_copy(update={"spec": job.spec.model_copy(update={"device": "cuda"})})


def run_pinned(
    workdir: str | Path,
    *,
    gpu: str | None,
    share: float = 1.0,
    threads: int = 1,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
) -> EvalResult:
    """Evaluate `workdir/job.json` in a fresh worker process pinned to one device (the pool's
    and Ray's way).

    `gpu`: the card as a `CUDA_VISIBLE_DEVICES` entry; the child sees only that card, as its
    `cuda:0`, so the job (`on_card`) runs on `cuda` and records `share` of the card's time.
    None: the child sees no card and runs on the CPU with `threads` torch (and BLAS) threads.
    """
    if gpu is None:
        label, count = "cpu", str(threads)
        env = env_with(
            CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=count, MKL_NUM_THREADS=count,
            DIFFNAS_TORCH_THREADS=count, DIFFNAS_DEVICE_LABEL=label,
        )  # fmt: skip
    else:
        label = f"cuda:{gpu}"
        env = env_with(
            CUDA_VISIBLE_DEVICES=gpu, DIFFNAS_DEVICE_LABEL=label,
            DIFFNAS_DEVICE_SHARE=f"{share:.4f}",
        )  # fmt: skip
    return run_worker_process(
        workdir, env=env, device=label, max_retries=max_retries, command=command
    )


def env_with(**values: str) -> dict[str, str]:
    """This process's environment plus `values` (a child's device pinning and thread counts)."""
    return {**os.environ, **values}


def check_trials_per_gpu(trials_per_gpu: int) -> None:
    if trials_per_gpu < 1:
        raise UserError(
            f"--trials-per-gpu must be at least 1, got {trials_per_gpu}.", field="trials_per_gpu"
        )


class SubprocessExecutor(Executor):
    """In a child process (`python -m diffnas.execute.worker WORKDIR`): isolates crashes and memory."""

    name = "subprocess"

    def __init__(
        self, max_retries: int = DEFAULT_MAX_RETRIES, command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        self.max_retries = max_retries
        self.command = tuple(command)

    def _run(self, job: EvalJob) -> EvalResult:
        return run_worker_process(job.workdir, max_retries=self.max_retries, command=self.command)
