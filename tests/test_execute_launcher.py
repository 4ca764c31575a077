"""The warm launcher: a job forked from it behaves as a fresh worker process would - its own
process, the environment it is handed, its output in worker.log, its exit status - and dies
with the launcher."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.execute import launcher
from diffnas.execute.job import EvalJob
from diffnas.execute.job_folder import WORKER_OUTPUT, WORKER_RUNS, finished_result, write_job
from procs import children, is_running
from tiny_models import TINY_JOB_ARCH, TINY_JOB_SPEC

DATA = DataSpec(kind="digits", subset=64, image_size=16)


def tiny_job(tmp_path: Path, name: str, steps: int = 4) -> EvalJob:
    recipe = TINY_JOB_SPEC.train_recipe("ddpm", "digits").model_copy(update={"steps": steps})
    job = EvalJob(
        arch=TINY_JOB_ARCH, objective="ddpm", data=DATA, spec=TINY_JOB_SPEC, recipe=recipe,
        seed=0, workdir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    write_job(job)
    return job


def test_a_warm_job_has_its_own_process_environment_and_output(tmp_path) -> None:
    job = tiny_job(tmp_path, "job")
    env = {**os.environ, "DIFFNAS_DEVICE_LABEL": "cpu:warm-test", "DIFFNAS_TORCH_THREADS": "1"}
    asked = time.time()
    code = launcher.run_warm(job.workdir, env, Path(job.workdir) / WORKER_OUTPUT)
    assert code == 0
    result = finished_result(job.workdir)
    assert result is not None and result.status == "complete"
    assert result.device == "cpu:warm-test"  # the environment handed over, not the launcher's
    (run,) = [
        json.loads(line) for line in (Path(job.workdir) / WORKER_RUNS).read_text().splitlines()
    ]
    assert run["pid"] != os.getpid() and run["start"] >= asked  # a process of its own, begun now
    assert "features (classifier)" in (Path(job.workdir) / WORKER_OUTPUT).read_text()


def test_a_killed_job_reports_its_signal_and_a_dead_launcher_takes_its_jobs(tmp_path) -> None:
    jobs = [tiny_job(tmp_path, f"long{i}", steps=100_000) for i in range(2)]
    codes: dict[int, int] = {}

    def run(i: int) -> None:
        job = jobs[i]
        codes[i] = launcher.run_warm(job.workdir, dict(os.environ), Path(job.workdir) / "log")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and launcher._launcher._server is None:
        time.sleep(0.05)  # the first job starts the launcher
    server = launcher._launcher._server.proc
    while time.monotonic() < deadline and len(children(server.pid)) < 2:
        time.sleep(0.05)
    first, second = children(server.pid)
    # in `ps`, each names itself as a fresh worker would: the worker module and its job folder
    titles = {Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ").strip()
              for pid in (first, second)}  # fmt: skip
    assert titles == {f"{sys.executable} -m diffnas.execute.worker {j.workdir}" for j in jobs}
    server.send_signal(signal.SIGINT)  # Ctrl-C is the executor's to handle, not the launcher's
    time.sleep(0.5)
    assert server.poll() is None and set(children(server.pid)) == {first, second}
    os.kill(first, signal.SIGKILL)  # as the out-of-memory killer would
    threads[0].join(timeout=30)
    assert codes[0] == -signal.SIGKILL
    server.kill()  # the launcher dies: the job it was running dies with it, and says so
    threads[1].join(timeout=30)
    assert codes[1] == launcher.LAUNCHER_GONE
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and is_running(second):
        time.sleep(0.05)
    assert not is_running(second)  # dead; an orphan's zombie may wait for a reaper
    # the next job starts a new launcher
    job = tiny_job(tmp_path, "after")
    assert launcher.run_warm(job.workdir, dict(os.environ), Path(job.workdir) / "log") == 0
    assert launcher._launcher._server.proc is not server


def test_only_a_job_that_sees_no_gpu_starts_warm(monkeypatch) -> None:
    monkeypatch.setattr(launcher.glob, "glob", lambda pattern: ["/dev/nvidia0"])  # a GPU box
    assert launcher.available({"CUDA_VISIBLE_DEVICES": ""})  # a CPU worker of the pool or Ray
    assert not launcher.available({"CUDA_VISIBLE_DEVICES": "0"})  # a card: a fresh process
    assert not launcher.available({})  # every card visible
    monkeypatch.setattr(launcher.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(launcher.os.path, "exists", lambda path: False)  # no GPU at all
    assert launcher.available({})
    monkeypatch.setenv(launcher.SWITCH, "0")  # the user's switch: every job fresh
    assert not launcher.available({"CUDA_VISIBLE_DEVICES": ""})


def test_a_dead_launcher_fails_only_its_own_jobs() -> None:
    """A launcher that dies while a new one already runs jobs (the old one's reader catching
    up late) reports its own jobs gone, and leaves the new one's running."""

    class Ended:  # a launcher process that has ended: no more answers
        stdout = io.BytesIO(b"")

        def wait(self) -> int:
            return -signal.SIGKILL

    owner = launcher.Launcher()
    old, new = launcher._Server(Ended()), launcher._Server(Ended())  # type: ignore[arg-type]
    old_job, new_job, new_request = Future(), Future(), Future()
    old.ended[101], new.ended[202], new.started[7] = old_job, new_job, new_request
    owner._server = new
    owner._read(old)
    assert old_job.result(timeout=1) == launcher.LAUNCHER_GONE
    assert not new_job.done() and not new_request.done() and owner._server is new
