"""`diffnas worker --storage URL`: evaluate the candidates queued in one Optuna study."""

from __future__ import annotations

import typer

from diffnas.errors import UserError


def worker(
    storage: str = typer.Option(
        ..., help="Database URL of the queue study, e.g. postgresql://user@host/db."
    ),
    study: str = typer.Option("diffnas-queue", help="Name of the queue study."),
    heartbeat_interval: int = typer.Option(
        10, min=1, max=3600, help="Seconds between this worker's heartbeats."
    ),
    grace_period: int = typer.Option(
        60, min=1, max=86_400, help="Seconds without a heartbeat before a candidate is re-queued."
    ),
    max_retry: int = typer.Option(
        2, min=0, max=10, help="Times a vanished worker's candidate is re-queued."
    ),
    max_jobs: int | None = typer.Option(
        None, min=1, max=1_000_000, help="Stop after this many candidates."
    ),
    wait: bool = typer.Option(
        False, "--wait/--exit-when-empty", help="Keep polling an empty queue (default: exit)."
    ),
) -> None:
    """Pull queued candidates from the study, evaluate each in a fresh process, tell the result."""
    from diffnas.execute.queue import open_queue, work

    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise UserError(
            "--grace-period must be longer than --heartbeat-interval (both in seconds, at least 1), "
            f"got {grace_period} and {heartbeat_interval}.",
            field="grace_period",
        )
    queue = open_queue(  # refuses a search's own study database: it is not a queue
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        study_name=study, create=False,
    )  # fmt: skip
    done = work(queue, max_jobs=max_jobs, exit_when_empty=not wait, max_retry=max_retry)
    print(f"worker: {done} candidate(s) evaluated")
