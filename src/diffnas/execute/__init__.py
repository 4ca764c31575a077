"""Where a candidate's evaluation runs (`--executor`): in this process (`inline`), in a child
process (`subprocess`), in concurrent worker processes on this machine (`pool`), on
a Ray cluster (`ray`), by `diffnas worker`s sharing a queue study (`queue`), or looked up in a
table of earlier evaluations (`table:NAME|PATH`).

An evaluation is a pure function of its `EvalJob` (architecture, recipe, data, scoring
protocol, seed), written to and read from its work folder (job_folder.py), so it can run
anywhere that sees the folder. base.py holds the executor interface, process.py the worker
processes, factory.py the choice by name.
"""

from __future__ import annotations

from diffnas.execute.base import Executor, InlineExecutor
from diffnas.execute.factory import make_executor
from diffnas.execute.process import SubprocessExecutor

__all__ = ["Executor", "InlineExecutor", "SubprocessExecutor", "make_executor"]
