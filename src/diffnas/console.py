"""The console results are printed on: a terminal's width, or no wrapping at all in a log.

Rich wraps at 80 columns when stdout is not a terminal, so a log or a pipe got one trial's
line split over two (`... ss=n` / `updown=conv (0.058 GMACs) ...`) and a table's title cut in
two. Off a terminal the console is `PIPE_WIDTH` wide and soft-wraps (a long line stays one
line, as `print` would write it); on a terminal rich fits the terminal as usual.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

PIPE_WIDTH = 200  # tables in a log or pipe get room for whole cells


def output_console(**options: Any) -> Console:
    """A rich console on stdout (stderr with `stderr=True`) that never wraps off a terminal."""
    stream = sys.stderr if options.get("stderr") else sys.stdout
    if stream.isatty():
        return Console(**options)
    return Console(**{"width": PIPE_WIDTH, "soft_wrap": True, **options})
