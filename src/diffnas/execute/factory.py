"""`--executor NAME`: the executor names, the check of one before any run folder exists, and
the executor built from it. The only module that imports every executor, each when it is
chosen, so a search loads only its own (the queue's database storage, the Ray package).
"""

from __future__ import annotations

from typing import Any

from diffnas.errors import UserError
from diffnas.execute.base import Executor, InlineExecutor
from diffnas.execute.process import SubprocessExecutor

EXECUTORS = ("inline", "subprocess", "pool", "ray", "queue")
TABLE_EXECUTOR = "table:NAME|PATH"  # a lookup in a table (`diffnas.execute.table_executor`)


def make_executor(name: str, **options: Any) -> Executor:
    """The executor `name`; `options` are its settings (None values take the defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name.startswith("table:"):
        from diffnas.execute.table_executor import TableExecutor, load_executor_table

        return TableExecutor(load_executor_table(name))
    if name == "inline":
        return InlineExecutor()
    if name == "subprocess":
        return SubprocessExecutor(**_take(options, "max_retries", "command"))
    if name == "pool":
        from diffnas.execute.pool import PoolExecutor

        return PoolExecutor(
            **_take(options, "max_retries", "command", "workers", "trials_per_gpu", "gpus")
        )
    if name == "ray":
        from diffnas.execute.ray_executor import RayExecutor

        return RayExecutor(
            **_take(options, "max_retries", "command", "ray_address", "trials_per_gpu", "workers")
        )
    if name == "queue":
        from diffnas.execute.queue import QueueExecutor

        check_executor(name, options.get("storage"))
        return QueueExecutor(**_take(options, "storage", "workers", "max_retries"))
    raise UserError(
        f"executor {name!r} is not known; allowed: {', '.join((*EXECUTORS, TABLE_EXECUTOR))}.",
        field="executor",
    )


def check_executor(name: str, storage: str | None = None, ray_address: str | None = None) -> None:
    """Refuse an executor whose package, database, cluster or table is missing, before any run
    folder exists."""
    if name.startswith("table:"):
        from diffnas.execute.table_executor import load_executor_table

        load_executor_table(name)
    if ray_address is not None and name != "ray":
        raise UserError(
            f"--ray-address {ray_address!r} is for --executor ray, not {name}", field="ray_address"
        )
    if name == "queue" and not storage:
        raise UserError(
            "--executor queue needs --storage URL: the database (PostgreSQL for workers on "
            "several machines) whose queue the `diffnas worker` processes pull from.",
            field="storage",
        )
    if name == "ray":
        from diffnas.execute.ray_executor import check_ray_address, import_ray

        check_ray_address(ray_address)
        import_ray()


def _take(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: options[k] for k in names if k in options}
