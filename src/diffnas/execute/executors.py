"""The old home of the executors, now split (issue 18, item 5): the interface in base.py,
worker processes in process.py, `--executor NAME` in factory.py.

Kept only for `diffnas.cli` (tabulate_cmd, proxy_check_cmd), which imports `check_executor`
from here; remove this module once those import it from `diffnas.execute.factory`.
"""

from __future__ import annotations

from diffnas.execute.factory import check_executor

__all__ = ["check_executor"]
