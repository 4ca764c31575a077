"""Where a candidate's evaluation runs: in this process, or in a child process.

An evaluation is a pure function of its `EvalJob` (architecture, recipe, data, scoring
protocol, seed), written to and read from its work folder, so it can run anywhere that sees
the folder: a GPU pool or a Ray cluster slot in as further executors.
"""

from __future__ import annotations

from diffnas.execute.executors import Executor, InlineExecutor, SubprocessExecutor, make_executor

__all__ = ["Executor", "InlineExecutor", "SubprocessExecutor", "make_executor"]
