"""Progress of long steps (training, sampling, feature extraction, a search's trials), in one place.

    with progress.task("training proxy", total=steps, completed=step) as bar:
        ...
        bar.update(step, info="loss 0.0312, 510 img/s")

Three modes, chosen once per process:
- `rich`: live bars on a terminal;
- `plain`: one line every `PLAIN_INTERVAL_S` seconds and one at the end, when stderr is not a
  terminal (a log file, CI, a pipe, a search's child process), so logs stay short and greppable.
  The interval line comes whether or not the step reports progress meanwhile: a timer thread
  writes it for the innermost open task (with its outer tasks' names, its count and an ETA),
  so a search waiting on child processes, or one slow training step, still logs every 30 s;
- `quiet`: nothing (`diffnas --quiet ...`).
Progress goes to stderr, so stdout keeps only results (`--json`, tables) whatever the mode.

Rich shows one live display at a time, so tasks opened inside another (the training inside a
search trial) become extra rows of the live display that is already up, not a second one.
"""

from __future__ import annotations

import sys
import threading
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
_TICK_S = 0.25  # how often the plain mode's timer looks whether a line is due

_forced: Mode | None = None  # set by `set_mode` / `set_quiet`; None = decided from stderr
_live: Progress | None = None  # the live display of the open rich tasks
_open = 0  # tasks shown now (rich or plain); the outermost one reports its end
_plain: list[Task] = []  # the open plain tasks, outermost first
_lock = threading.Lock()  # plain lines: one writer at a time, one line per interval
_last_line = 0.0  # when the last plain line was written (monotonic)
_ticker: tuple[threading.Thread, threading.Event] | None = None


def duration(seconds: float) -> str:
    """`45 s`, `3 min 20 s`, `2 h 5 min`: how long, to the precision a log line needs."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


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
        self._start = time.monotonic()
        self._started_at = completed  # a resumed run's rate counts only this run's units
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
        elif self._mode == "plain" and time.monotonic() - _last_line >= PLAIN_INTERVAL_S:
            _plain_line(self._line())  # checked again under the lock; the line built only when due

    def eta(self) -> float | None:
        """Seconds left at this run's rate so far; None without a total or progress."""
        done = self.completed - self._started_at
        elapsed = time.monotonic() - self._start
        if self.total is None or done <= 0 or elapsed <= 0:
            return None
        return max(0.0, (self.total - self.completed) * elapsed / done)

    def _line(self, end: str = "") -> str:
        count = f" {self.completed}/{self.total}" if self.total is not None else ""
        info = f", {self.info}" if self.info else ""
        elapsed = time.monotonic() - self._start
        if end:
            when = f"{end} {elapsed:.1f} s"
        else:
            eta = self.eta()
            when = f"{elapsed:.0f} s" + (f", ETA {duration(eta)}" if eta is not None else "")
        colon = ":" if count or info else ""
        return f"{self.description}{colon}{count}{info} ({when})"

    def _finish(self, failed: bool) -> None:
        # Only the outermost task reports its end: a search trial says it is done, not
        # each of the sampling and feature passes inside it.
        outermost = _open == 1
        line = self._line("stopped after" if failed else "done in")
        if self._mode == "plain" and outermost:
            _plain_line(line, force=True)
        elif self._mode == "rich":
            assert _live is not None and self._id is not None
            _live.remove_task(self._id)
            if outermost:
                mark = "[red]✗[/red]" if failed else "[green]✓[/green]"
                _live.console.print(f"{mark} {escape(line)}")


def _plain_line(line: str, *, force: bool = False) -> None:
    """Write `line` when an interval has passed since the last plain line (or `force`)."""
    global _last_line
    with _lock:
        now = time.monotonic()
        if force or now - _last_line >= PLAIN_INTERVAL_S:
            _last_line = now
            print(line, file=sys.stderr, flush=True)


def _tick(stop: threading.Event) -> None:
    """The plain mode's timer: the innermost open task's line, each interval without one."""
    while not stop.wait(_TICK_S):
        if PLAIN_INTERVAL_S <= 0:
            continue  # a caller logging every update needs no timer
        with _lock:
            tasks = list(_plain)
            due = time.monotonic() - _last_line >= PLAIN_INTERVAL_S
        if tasks and due:
            outer = "".join(f"{t.description} > " for t in tasks[:-1])
            _plain_line(outer + tasks[-1]._line())


def _start_ticker() -> None:
    global _ticker, _last_line
    if _ticker is None:
        stop = threading.Event()
        thread = threading.Thread(target=_tick, args=(stop,), name="progress-ticker", daemon=True)
        _ticker = (thread, stop)
        _last_line = time.monotonic()  # the first line is due an interval after the start
        thread.start()


def _stop_ticker() -> None:
    global _ticker
    if _ticker is not None:
        thread, stop = _ticker
        _ticker = None
        stop.set()
        thread.join()


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
    if shown == "plain":
        with _lock:
            _plain.append(bar)
        _start_ticker()
    failed = True
    try:
        yield bar
        failed = False
    finally:
        if shown == "plain":
            with _lock:
                _plain.remove(bar)
        bar._finish(failed)
        if shown != "quiet":
            _open -= 1
        if not _plain:
            _stop_ticker()
        if _open == 0 and _live is not None:
            _live.stop()
            _live = None
