"""Where a candidate's evaluation runs (`--executor`): in this process (`inline`), in a child
process (`subprocess`), in concurrent worker processes on this machine (`pool`), on
a Ray cluster (`ray`), by `diffnas worker`s sharing a queue study (`queue`), or looked up in a
table of earlier evaluations (`table:NAME|PATH`).

An evaluation is a pure function of its `EvalJob` (architecture, recipe, data, scoring
protocol, seed), written to and read from its work folder, so it can run anywhere that sees
the folder.
"""

from __future__ import annotations

from diffnas.execute.executors import Executor, InlineExecutor, SubprocessExecutor, make_executor

__all__ = ["Executor", "InlineExecutor", "SubprocessExecutor", "make_executor"]
