"""Progress of long steps (training, sampling, feature extraction, a search's trials), in one place.

    with progress.task("training proxy", total=steps, completed=step) as bar:
        ...
        bar.update(step, info="loss 0.0312, 510 img/s")

Three modes, chosen once per process:
- `rich`: live bars on a terminal;
- `plain`: one line every `PLAIN_INTERVAL_S` seconds and one at the end, when stderr is not a
  terminal (a log file, CI, a pipe, a search's child process), so logs stay short and greppable;
- `quiet`: nothing (`diffnas --quiet ...`).
Progress goes to stderr, so stdout keeps only results (`--json`, tables) whatever the mode.

Rich shows one live display at a time, so tasks opened inside another (the training inside a
search trial) become extra rows of the live display that is already up, not a second one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Mode = Literal["rich", "plain", "quiet"]
PLAIN_INTERVAL_S = 30.0  # a long run logs a line this often, a short one only its end

_forced: Mode | None = None  # set by `set_mode` / `set_quiet`; None = decided from stderr
_live: Progress | None = None  # the live display of the open rich tasks
_open = 0  # tasks shown now (rich or plain); the outermost one reports its end


def set_quiet(quiet: bool) -> None:
    """`--quiet`: no progress at all (True), or back to the automatic choice (False)."""
    set_mode("quiet" if quiet else None)


def set_mode(mode: Mode | None) -> None:
    """Force a mode (tests, embedding applications); None restores the automatic choice."""
    global _forced
    _forced = mode


def mode() -> Mode:
    """The mode progress is shown in now."""
    if _forced is not None:
        return _forced
    return "rich" if sys.stderr.isatty() else "plain"


class Task:
    """One long step. `update` is cheap enough to call every iteration."""

    def __init__(self, description: str, total: int | None, completed: int, shown: Mode) -> None:
        self.description = description
        self.total = total
        self.completed = completed
        self.info = ""
        self._mode = shown
        self._id = None
        self._start = self._last_line = time.monotonic()
        if shown == "rich":
            assert _live is not None
            self._id = _live.add_task(
                escape(description), total=total, completed=completed, info=""
            )

    def update(
        self, completed: int | None = None, *, advance: int = 0, info: str | None = None
    ) -> None:
        """Set the units done (`completed`) or add to them (`advance`); `info` is a short
        text shown after the bar (e.g. the loss)."""
        self.completed = (self.completed if completed is None else completed) + advance
        if info is not None:
            self.info = info
        if self._mode == "rich":
            assert _live is not None and self._id is not None
            _live.update(self._id, completed=self.completed, info=escape(self.info))
        elif self._mode == "plain" and time.monotonic() - self._last_line >= PLAIN_INTERVAL_S:
            self._last_line = time.monotonic()
            print(self._line(), file=sys.stderr, flush=True)

    def _line(self, end: str = "") -> str:
        count = f" {self.completed}/{self.total}" if self.total is not None else ""
        info = f", {self.info}" if self.info else ""
        elapsed = time.monotonic() - self._start
        when = f"{end} {elapsed:.1f} s" if end else f"{elapsed:.0f} s"
        colon = ":" if count or info else ""
        return f"{self.description}{colon}{count}{info} ({when})"

    def _finish(self, failed: bool) -> None:
        # Only the outermost task reports its end: a search trial says it is done, not
        # each of the sampling and feature passes inside it.
        outermost = _open == 1
        line = self._line("stopped after" if failed else "done in")
        if self._mode == "plain" and outermost:
            print(line, file=sys.stderr, flush=True)
        elif self._mode == "rich":
            assert _live is not None and self._id is not None
            _live.remove_task(self._id)
            if outermost:
                mark = "[red]✗[/red]" if failed else "[green]✓[/green]"
                _live.console.print(f"{mark} {escape(line)}")


def _start_live() -> Progress:
    console = Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # stdout printed meanwhile goes above the bars when it shares the terminal, and
        # straight to its file when redirected
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=True,
    )


@contextmanager
def task(
    description: str, total: int | None = None, *, completed: int = 0, enabled: bool = True
) -> Iterator[Task]:
    """Show the progress of one long step while the block runs; `total=None` is a spinner.

    `enabled=False` shows nothing for this task (a caller's own switch, e.g. a library user
    who wants a silent `train`); `--quiet` silences every task.
    """
    global _live, _open
    shown: Mode = mode() if enabled else "quiet"
    if shown == "rich" and _live is None:
        _live = _start_live()
        _live.start()
    if shown != "quiet":
        _open += 1
    bar = Task(description, total, completed, shown)
    failed = True
    try:
        yield bar
        failed = False
    finally:
        bar._finish(failed)
        if shown != "quiet":
            _open -= 1
        if _open == 0 and _live is not None:
            _live.stop()
            _live = None
