"""`--executor pool`: one fresh worker process per candidate on this machine, run concurrently.

With GPUs, each candidate's process sees one card (`CUDA_VISIBLE_DEVICES`). A card holds
up to `trials_per_gpu` candidates at once, packed by measured cost: a candidate's share of a
card is its training cost per step (GMACs per image x batch size) over `pack_gmacs`, at least
1/`trials_per_gpu` and at most the whole card, so small candidates share one (an H200 gave
2.0x the images/s with four concurrent trainings of a 4.4 M-parameter UNet) and a large one
gets a card alone. Without a GPU (or for jobs on `cpu`) it runs `workers` CPU workers, each
with its share of the cores as torch threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.process import (
    DEFAULT_MAX_RETRIES,
    WORKER_COMMAND,
    check_trials_per_gpu,
    on_card,
    run_pinned,
)

# Training cost per step (GMACs per image x batch) that one card's share 1.0 stands for: the
# IDDPM CIFAR-10 UNet (8.39 GMACs x 128 = 1,074) saturates an H200 on its own.
DEFAULT_PACK_GMACS = 512.0


def visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def child_visible_device(card: int) -> str:
    """Card `card` as this process numbers it, as a child's `CUDA_VISIBLE_DEVICES` entry.

    A child reads that variable against all of the machine's cards, not against the ones this
    process was given: under CUDA_VISIBLE_DEVICES=2,3 our card 1 is the child's "3".
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",")] if visible else []
    return entries[card] if card < len(entries) else str(card)


def step_gmacs(job: EvalJob) -> float:
    """A job's training cost per optimizer step: GMACs per image times its batch size."""
    from diffnas.model.cost import measure_cost

    return measure_cost(job.arch).gmacs * job.recipe.batch_size  # the recipe the job trains


class PoolExecutor(Executor):
    """Candidates in parallel worker processes on this machine's GPUs, or on its CPU cores."""

    name = "pool"
    concurrent = True

    def __init__(
        self,
        workers: int | None = None,
        trials_per_gpu: int = 1,
        gpus: Sequence[int] | None = None,
        pack_gmacs: float = DEFAULT_PACK_GMACS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        check_trials_per_gpu(trials_per_gpu)
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}.", field="workers")
        cores = os.cpu_count() or 1
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.cpu_workers = workers or max(1, min(4, cores // 2))
        self.threads_per_worker = max(1, cores // self.cpu_workers)
        self.trials_per_gpu = trials_per_gpu
        self.pack_gmacs = pack_gmacs
        self.max_retries = max_retries
        self.command = tuple(command)
        self._gpu_load = dict.fromkeys(self.gpus, 0.0)  # card -> share in use
        self._cpu_busy = 0
        self._free = threading.Condition()
        self._threads: ThreadPoolExecutor | None = (
            None  # started by the first job, ended by close()
        )

    @property
    def slots(self) -> int:
        return len(self.gpus) * self.trials_per_gpu if self.gpus else self.cpu_workers

    def on_gpu(self, job: EvalJob) -> bool:
        """Whether `job` goes to a card: this pool has cards and the job may use one."""
        return bool(self.gpus) and job.spec.device != "cpu"

    def prepare(self, job: EvalJob) -> EvalJob:
        return on_card(job) if self.on_gpu(job) else job

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
        on_gpu = self.on_gpu(job)
        share = self.gpu_share(job) if on_gpu else 1.0
        if self._threads is None:
            # one thread per slot waits on its worker process; the threads live until close(),
            # which matters: a child started with die_with_parent dies with its starting thread
            slots = len(self.gpus) * self.trials_per_gpu + self.cpu_workers
            self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="diffnas-pool")
        return self._threads.submit(self._run_placed, job, on_gpu, share)

    def gpu_share(self, job: EvalJob) -> float:
        """The fraction of one card the job is given (1/trials_per_gpu up to the whole card)."""
        return min(1.0, max(1.0 / self.trials_per_gpu, step_gmacs(job) / self.pack_gmacs))

    def _place(self, on_gpu: bool, share: float) -> int | None:
        """Wait for room: the least-loaded card with `share` free (a GPU index), or a CPU slot (None)."""
        with self._free:
            while True:
                if on_gpu:
                    fits = [g for g, load in self._gpu_load.items() if load + share <= 1.0 + 1e-9]
                    if fits:
                        card = min(fits, key=lambda g: self._gpu_load[g])
                        self._gpu_load[card] += share
                        return card
                elif self._cpu_busy < self.cpu_workers:
                    self._cpu_busy += 1
                    return None
                self._free.wait()

    def _release(self, card: int | None, share: float) -> None:
        with self._free:
            if card is None:
                self._cpu_busy -= 1
            else:
                self._gpu_load[card] -= share
            self._free.notify_all()

    def _run_placed(self, job: EvalJob, on_gpu: bool, share: float) -> EvalResult:
        card = self._place(on_gpu, share)
        try:
            return run_pinned(
                job.workdir, gpu=None if card is None else child_visible_device(card), share=share,
                threads=self.threads_per_worker, max_retries=self.max_retries,
                command=self.command,
            )  # fmt: skip
        finally:
            self._release(card, share)

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
