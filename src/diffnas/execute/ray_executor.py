"""`--executor ray`: each candidate a Ray task, on a local Ray instance or an existing cluster.

A task asks for one CPU and, when the cluster has GPUs and the job may use one, a fraction
1/`trials_per_gpu` of a GPU; Ray pins the task with `CUDA_VISIBLE_DEVICES`. Inside the task
the evaluation runs in a fresh worker process (`python -m diffnas.execute.worker`), so a
killed or out-of-memory evaluation is retried like the pool's (`max_retries`), then failed.

Results come back as the task's return value. Artifacts: on a local instance (or a cluster
whose nodes mount the run folder at the same path, a shared file system) the task works in
the run folder itself, where the driver wrote the job.json. On a node that does not see the
run folder, the task evaluates in a temporary folder and returns its files up to
`ARTIFACT_LIMIT` bytes each (result, samples, logs, the final checkpoint when small; not the
temporary job.json), which the driver writes into the trial's folder; larger checkpoints stay
on that node.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import JOB_FILE, has_job, write_job
from diffnas.execute.process import (
    DEFAULT_MAX_RETRIES,
    WORKER_COMMAND,
    check_trials_per_gpu,
    on_card,
    run_pinned,
)

ARTIFACT_LIMIT = 64 * 2**20
RAY_CLIENT_PORT = 10001  # `ray://HOST` without a port: Ray client's default
REACH_TIMEOUT_S = 3.0


def check_ray_address(address: str | None) -> None:
    """`--ray-address` checked before any run folder: `auto`, `local`, `ray://HOST[:PORT]` (Ray
    client) or `HOST:PORT` (the head's GCS), and for the last two something listening there."""
    if address is None or address in ("auto", "local"):
        return
    form = "auto, local, ray://HOST[:PORT] (Ray client, e.g. ray://head:10001) or HOST:PORT"
    client = address.startswith("ray://")
    try:
        parts = urlsplit(address if client else f"//{address}")
        port = parts.port or (RAY_CLIENT_PORT if client else None)
    except ValueError:
        port, parts = None, None
    if parts is None or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise UserError(
            f"--ray-address {address!r} is not a Ray address; give {form}", field="ray_address"
        )
    try:
        socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(
            f"--ray-address {address!r}: nothing answers at {parts.hostname}:{port} "
            f"({err.strerror or err}); start the cluster (ray start --head) or check the address, "
            "or leave it out for a local Ray instance",
            field="ray_address",
        ) from None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs the ray package: pip install 'diffnas[ray]' "
            "(or pick --executor pool).",
            field="executor",
        ) from None
    return ray


def evaluate_in_task(
    job_json: dict[str, Any], max_retries: int, command: Sequence[str], gpu_share: float
) -> dict[str, Any]:
    """The body of one Ray task: evaluate the job; return its result and, off the shared file
    system, its artifacts as {relative path: bytes}."""
    job = EvalJob.model_validate(job_json)
    # Ray pinned this task with CUDA_VISIBLE_DEVICES when it was granted a share of a card
    gpu_ids = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpu = gpu_ids.split(",")[0] if gpu_share > 0 and gpu_ids else None
    options = {"gpu": gpu, "share": gpu_share, "max_retries": max_retries, "command": command}
    if has_job(job.workdir):  # the run folder is here, with the job.json the driver wrote
        result = run_pinned(job.workdir, **options)
        return {"result": result.model_dump(mode="json"), "artifacts": {}}
    with tempfile.TemporaryDirectory(prefix="diffnas-ray-") as tmp:
        workdir = Path(tmp) / "trial"
        local = job.model_copy(
            update={"workdir": str(workdir), "cache_dir": str(Path(tmp) / "cache")}
        )
        result = run_pinned(write_job(local), **options)
        artifacts = {
            str(p.relative_to(workdir)): p.read_bytes()
            for p in workdir.rglob("*")
            if p.is_file() and p.name != JOB_FILE and p.stat().st_size <= ARTIFACT_LIMIT
        }
        return {"result": result.model_dump(mode="json"), "artifacts": artifacts}


class RayExecutor(Executor):
    """Candidates as Ray tasks with a (fractional) GPU request each."""

    name = "ray"
    concurrent = True

    def __init__(
        self,
        ray_address: str | None = None,
        trials_per_gpu: int = 1,
        workers: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        command: Sequence[str] = WORKER_COMMAND,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.ray = import_ray()
        check_trials_per_gpu(trials_per_gpu)
        self.address = ray_address
        self.trials_per_gpu = trials_per_gpu
        self.max_retries = max_retries
        self.command = tuple(command)
        # a local instance: `workers` CPUs for tasks (default all); a cluster brings its own
        self.init_options = {"include_dashboard": False, "log_to_driver": False}
        if ray_address is None and workers is not None:
            self.init_options["num_cpus"] = workers
        self.init_options.update(init_options or {})
        self._started_ray = False
        self._task: Any = None

    def _connect(self) -> Any:
        if self._task is None:
            if not self.ray.is_initialized():
                self.ray.init(address=self.address, **self.init_options)
                self._started_ray = True
            self._task = self.ray.remote(evaluate_in_task)
        return self._task

    @property
    def slots(self) -> int:
        """The cluster's GPUs times trials per GPU, or its CPUs (one per CPU task)."""
        self._connect()
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        return gpus * self.trials_per_gpu if gpus else max(1, int(resources.get("CPU", 1)))

    def gpu_share(self, job: EvalJob) -> float:
        """The fraction of a card the job's task asks for: 0 on a cluster without GPUs or for a
        job on the CPU, else 1/trials_per_gpu."""
        self._connect()
        has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
        return 1.0 / self.trials_per_gpu if has_gpus and job.spec.device != "cpu" else 0.0

    def prepare(self, job: EvalJob) -> EvalJob:
        return on_card(job) if self.gpu_share(job) > 0 else job

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
        task = self._connect()
        share = self.gpu_share(job)
        # Ray's own retries stay off: a dead worker process is retried inside the task
        ref = task.options(num_cpus=1, num_gpus=share, max_retries=0).remote(
            job.model_dump(mode="json"), self.max_retries, self.command, share
        )
        outer: Future[EvalResult] = Future()

        def unpack(inner: Future[Any]) -> None:
            try:
                payload = inner.result()
            except BaseException as err:  # the task itself failed (its node died): report it
                outer.set_result(
                    EvalResult(status="failed", error=f"Ray task failed: {err}"[:2000])
                )
                return
            workdir = Path(job.workdir)
            for rel, data in payload["artifacts"].items():
                target = workdir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            outer.set_result(EvalResult.model_validate(payload["result"]))

        ref.future().add_done_callback(unpack)
        return outer

    def close(self) -> None:
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._started_ray = False
        self._task = None
