"""The executor interface: executors run `evaluate_candidate(job)`; the result is also left in
the job's folder (`job_folder.py`), and a job whose folder holds one is not run again.

Every executor offers `run(job)` (one job, blocking), `submit(job) -> Future` and
`run_many(jobs)`, which yields `(index, result)` as jobs finish. The sequential executors
(inline, subprocess, table) start a job only when the caller asks for its result, so a search
tells each result before the next candidate starts; the concurrent ones (pool, ray, queue)
start every job at once and yield in the order they finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed

from diffnas.execute.job import EvalJob, EvalResult, evaluate_candidate
from diffnas.execute.job_folder import finished_result, write_job, write_result
from diffnas.space.arch import ArchConfig


def finished_future(result: EvalResult) -> Future[EvalResult]:
    """A future that already holds `result` (a finished job's, read back)."""
    future: Future[EvalResult] = Future()
    future.set_result(result)
    return future


class Executor:
    """Runs evaluation jobs. A finished job's result.json is reused, never recomputed."""

    name = "base"
    concurrent = False  # True: submit() starts the job now, in parallel with others

    @property
    def slots(self) -> int:
        """How many jobs run at once at most: the asynchronous search keeps this many in flight."""
        return 1

    def run(self, job: EvalJob) -> EvalResult:
        return self.submit(job).result()

    def submit(self, job: EvalJob) -> Future[EvalResult]:
        """Start `job` (a sequential executor runs it now) and return its future result.

        The job's folder gets its job.json here, once, as this executor runs it (`prepare`);
        the result is written beside it when it comes back."""
        finished = finished_result(job.workdir)
        if finished is not None:
            return finished_future(finished)
        job = self.prepare(job)
        write_job(job)
        outer: Future[EvalResult] = Future()

        def save(inner: Future[EvalResult]) -> None:
            try:
                result = inner.result()
                write_result(job.workdir, result)
            except BaseException as err:  # a UserError: the caller sees it from .result()
                outer.set_exception(err)
            else:
                outer.set_result(result)

        self._submit(job).add_done_callback(save)
        return outer

    def prepare(self, job: EvalJob) -> EvalJob:
        """The job as this executor runs it, which is what its job.json records (the pool and
        Ray pin a job that may use a card to `cuda`; the queue makes its paths absolute)."""
        return job

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
        """Default: evaluate now, in the caller's thread (the sequential executors)."""
        future: Future[EvalResult] = Future()
        try:
            future.set_result(self._run(job))
        except BaseException as err:
            future.set_exception(err)
        return future

    def _run(self, job: EvalJob) -> EvalResult:
        raise NotImplementedError

    def run_many(self, jobs: Sequence[EvalJob]) -> Iterator[tuple[int, EvalResult]]:
        """Evaluate `jobs`; yield `(index, result)` as each finishes."""
        if not self.concurrent:
            for index, job in enumerate(jobs):  # lazily: one job, told, then the next
                yield index, self.run(job)
            return
        futures = {self.submit(job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        """Release processes, threads or a cluster connection (nothing for the sequential ones)."""

    def admits(self, arch: ArchConfig) -> str | None:
        """None if this executor can evaluate `arch`; else why not, one sentence for the gate
        (a table answers only the architectures it holds)."""
        return None


class InlineExecutor(Executor):
    """In this process: no start-up cost; a hard crash (segfault) takes the search with it."""

    name = "inline"

    def _run(self, job: EvalJob) -> EvalResult:
        return evaluate_candidate(job)
