"""A screened search that SIGKILLs itself at a chosen moment, for the resume tests.

`python screen_kill_search.py CONFIG.json RUN_DIR WHEN`, WHEN one of
- `evaluate:N`: as the N-th evaluation starts (its trial RUNNING, nothing told);
- `screened-out:N`: right after the N-th screened-out trial is recorded (the round's file
  written, its other trials not all recorded yet).
Scores come from the hand-made table of `screen_doubles` (the space in CONFIG).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from diffnas.execute.job import EvalJob, EvalResult
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space.search_space import load_space
from screen_doubles import TableExecutor, make_table


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingExecutor(TableExecutor):
    def __init__(self, table: dict[str, float], at: int) -> None:
        super().__init__(table)
        self.at = at

    def _run(self, job: EvalJob) -> EvalResult:
        if len(self.evaluated) + 1 == self.at:
            die()
        return super()._run(job)


if __name__ == "__main__":
    config = SearchConfig.model_validate_json(Path(sys.argv[1]).read_text())
    run_dir, (when, count) = Path(sys.argv[2]), sys.argv[3].split(":")
    table = make_table(load_space(config.space))
    executor = TableExecutor(table)
    if when == "evaluate":
        executor = KillingExecutor(table, int(count))
    else:
        real = study_mod.add_screened_out
        recorded: list[int] = []

        def add_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            number = real(*args, **kwargs)
            recorded.append(number)
            if len(recorded) == int(count):
                die()
            return number

        study_mod.add_screened_out = add_then_die  # type: ignore[assignment]
    SearchRun(config, run_dir, executor=executor, console=Console(quiet=True)).run()
    sys.exit(3)  # never reached when the kill came
