"""Child-process entry point: `python -m diffnas.execute.worker WORKDIR` evaluates WORKDIR/job.json."""

from __future__ import annotations

import sys
from pathlib import Path

from diffnas.execute.executors import JOB_FILE, RESULT_FILE
from diffnas.execute.job import EvalJob, evaluate_candidate
from diffnas.runs import read_json, write_json


def main(workdir: str) -> int:
    path = Path(workdir)
    job = EvalJob.model_validate(read_json(path / JOB_FILE))
    result = evaluate_candidate(job)
    write_json(path / RESULT_FILE, result.model_dump(mode="json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
