"""Child-process entry point: `python -m diffnas.execute.worker WORKDIR` evaluates WORKDIR/job.json.

The parent pins the child with its environment: `CUDA_VISIBLE_DEVICES` (one card),
`DIFFNAS_TORCH_THREADS` (its share of the CPU cores), `DIFFNAS_DEVICE_LABEL` and
`DIFFNAS_DEVICE_SHARE` (what the cost accounting records). A configuration error is written
to WORKDIR/user_error.txt and ends the child with code 2, for the parent to raise again.
The worker appends when it started and ended to WORKDIR/worker.jsonl.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

# How a worker is started fresh (`diffnas.execute.process`), and how a warm one forked by
# `diffnas.execute.launcher` names itself in `ps`
WORKER_COMMAND = (sys.executable, "-m", "diffnas.execute.worker")
# When this process began: the torch imports below take seconds, and they are the worker's too.
PROCESS_START = time.time()


def main(workdir: str, started: float | None = None) -> int:
    """`started`: when this job's process began (a forked one begins after the imports)."""
    threads = os.environ.get("DIFFNAS_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from diffnas.errors import UserError
    from diffnas.execute.job import evaluate_candidate
    from diffnas.execute.job_folder import (
        USER_ERROR_EXIT,
        USER_ERROR_FILE,
        WORKER_RUNS,
        read_job,
        write_result,
    )
    from diffnas.runs import append_jsonl

    path = Path(workdir)
    try:
        result = evaluate_candidate(read_job(path))
    except UserError as err:
        (path / USER_ERROR_FILE).write_text(str(err))
        return USER_ERROR_EXIT
    write_result(path, result)
    append_jsonl(  # when and where this process worked on the job: a pool's concurrency shows here
        path / WORKER_RUNS,
        {"pid": os.getpid(), "host": socket.gethostname(), "start": started or PROCESS_START,
         "end": time.time(), "device": result.device},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
