"""`--executor table:NAME|PATH`: every evaluation answered by looking it up in a table.

A search against a table (`diffnas tabulate`'s output, or a bundled one by name) runs every
part of the search unchanged - proposers, LLM calls, repair, memory, successive halving,
promotion, status, report - but each evaluation is a lookup: the score of one recorded seed
and that row's device-seconds as its cost. The seed is chosen from the search's seed and the
candidate's architecture (a hash of both), so a search reproduces exactly, and two proposers
run with the same seed meet the same draw for the same architecture (common random numbers:
their difference is not blurred by different luck on the same candidate).

A job is matched to the table's setting that ran exactly its protocol (`protocol_key`: the
recipe without device fields, the score); a successive-halving rung of `max_steps` steps is
matched to the setting of that many steps. That is an approximation the README states: the
table's setting is a run of its own length (its cosine schedule fitted to it), a rung is a
stop inside a longer run. The search checks every match before it starts (`check_search`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec
from diffnas.execute.table import Table, TableSetting
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace
from diffnas.train.recipe import TrainRecipe

PREFIX = "table:"


def is_table(executor: str) -> bool:
    return executor.startswith(PREFIX)


def load_executor_table(executor: str) -> Table:
    """The table named by `--executor table:NAME|PATH` (a `UserError` naming it if unreadable)."""
    source = executor[len(PREFIX) :]
    if not source:
        raise UserError(
            "--executor table: needs a table, e.g. table:micro-digits (bundled) or "
            "table:runs/00003-tabulate-micro/micro-digits (the files of `diffnas tabulate`).",
            field="executor",
        )
    return Table.load(source)


def pick_seed(search_seed: int, arch_id: str, seeds: list[int]) -> int:
    """The recorded seed a search with `search_seed` sees for the architecture `arch_id`."""
    digest = hashlib.sha256(f"{search_seed}:{arch_id}".encode()).hexdigest()
    return seeds[int(digest, 16) % len(seeds)]


def job_recipe(job: EvalJob) -> TrainRecipe:
    """The recipe a job's scores come from: its own, or for a rung (`max_steps`) the recipe of
    a run that long, resolved as `diffnas tabulate` resolves its settings."""
    if job.max_steps is None or job.max_steps >= job.recipe.steps:
        return job.recipe
    overrides = {**job.spec.recipe_overrides, "steps": job.max_steps}
    spec = job.spec.model_copy(update={"recipe_overrides": overrides})
    return spec.train_recipe(job.objective, job.data.kind, device_type="cpu")


def same_space(a: SearchSpace, b: SearchSpace) -> bool:
    """The same architectures under the same budget: equal once names and descriptions are
    set aside (a copy of a preset in a YAML file is the preset)."""
    words = {"name", "description"}
    return a.model_dump(exclude=words) == b.model_dump(exclude=words)


def same_data(a: DataSpec, b: DataSpec, image_size: int) -> bool:
    """The same images: equal specs once an unset size is the size the space takes."""

    def sized(spec: DataSpec) -> DataSpec:
        return spec.model_copy(update={"image_size": spec.image_size or image_size})

    return sized(a) == sized(b)


class TableExecutor(Executor):
    """Answers evaluation jobs from `table` (see the module docstring), one after another: a
    lookup takes no time, so there is nothing to run concurrently."""

    name = "table"

    def __init__(self, table: Table) -> None:
        self.table = table

    def admits(self, arch: ArchConfig) -> str | None:
        """None for an architecture the table holds; else the gate's reason."""
        if arch in self.table:
            return None
        space = self.table.meta.space
        return (
            f"architecture {arch.arch_hash()} is not in table {self.table.name!r}, which holds "
            f"the {len(self.table.archs())} architectures of space {space.name!r} within its "
            "budget; propose one of those"
        )

    def setting(self, job: EvalJob) -> TableSetting | None:
        return self.table.setting_for(job_recipe(job), job.spec.score)

    def _run(self, job: EvalJob) -> EvalResult:
        setting = self.setting(job)
        if setting is None:  # the search checked its protocols before it started
            raise UserError(
                f"table {self.table.name!r} has no setting for this evaluation's protocol "
                f"({job_recipe(job).steps} steps, {job.spec.score.label}); it has: "
                f"{self.table.describe_settings()}.",
                field="executor",
            )
        arch_id = job.arch.arch_hash()
        reason = self.admits(job.arch)
        if reason is not None:
            return EvalResult(status="failed", error=reason)
        # the proxies' seeds wherever the setting has them all, so a search's rungs and its
        # final lookup read one training seed; a reference with fewer seeds picks among its own
        seeds = self.table.seeds
        if not set(seeds) <= set(self.table.seeds_of(setting.name)):
            seeds = self.table.seeds_of(setting.name)
        seed = pick_seed(job.seed, arch_id, seeds)
        row = self.table.row(arch_id, setting.name, seed)
        if row is None:
            return EvalResult(
                status="failed",
                error=f"table {self.table.name!r} has no row for {arch_id} under "
                f"{setting.name} with seed {seed} (an unfinished table?)",
            )
        train = {"steps": setting.steps, "last_loss": row.final_loss, "table_seed": seed}
        if row.status != "complete" or row.score is None:
            return EvalResult(
                status=row.status if row.status != "complete" else "failed",  # type: ignore[arg-type]
                train=train, error=row.error or "no score recorded", wall_s=row.wall_seconds,
                device=row.device, device_s=row.device_seconds,
            )  # fmt: skip
        protocol = {
            **(setting.protocol or {"metric": setting.score.metric}),
            "extractor": (setting.protocol or {}).get("extractor", setting.score.extractor),
            "table": self.table.name,
            "table_seed": seed,
        }
        score: dict[str, Any] = {"value": row.score, "label": row.score_label, "protocol": protocol}
        return EvalResult(
            status="complete", score=row.score, scores={setting.score.metric: score}, train=train,
            wall_s=row.wall_seconds, device=row.device, device_s=row.device_seconds,
        )  # fmt: skip


def check_search(
    table: Table,
    *,
    space: SearchSpace,
    data: DataSpec,
    proxy: EvalSpec,
    rung_steps: list[int],
    final: EvalSpec,
    promote: int,
) -> None:
    """Refuse, before a run folder exists, a search the table cannot answer: another space or
    data, a proxy protocol (or a rung's step count) it has no setting for, a final protocol
    other than its reference. Every refusal lists what the table has."""
    meta = table.meta
    if not same_space(space, meta.space):
        raise UserError(
            f"--space {space.name!r} is not the space of table {table.name!r} "
            f"({meta.space.name!r}): search that space (--space {meta.space.name}).",
            field="space",
        )
    if not same_data(data, meta.data, space.image_size):
        raise UserError(
            f"--data {data.model_dump(exclude_defaults=True)} is not the data of table "
            f"{table.name!r} ({meta.data.model_dump(exclude_defaults=True)}).",
            field="data",
        )
    objective = meta.objective
    for steps in rung_steps:
        spec = proxy.model_copy(
            update={"recipe_overrides": {**proxy.recipe_overrides, "steps": steps}}
        )
        recipe = spec.train_recipe(objective, data.kind, device_type="cpu")
        if table.setting_for(recipe, proxy.score) is None:
            what = "successive-halving rung" if steps != rung_steps[-1] else "proxy protocol"
            raise UserError(
                f"table {table.name!r} has no setting for the search's {what}: {steps} steps x "
                f"{recipe.batch_size}, {proxy.score.label}"
                + ("" if proxy.score.metric == "loss" else _ns(proxy))
                + f". The table has: {table.describe_settings()}. Choose one with --proxy-steps, "
                "--proxy-batch-size, --metric, --score-samples and --score-steps (rungs: "
                "--halving-rungs/--halving-eta whose step counts the table has).",
                field="proxy",
            )
    final_setting = table.setting_for(final.train_recipe(objective, data.kind, "cpu"), final.score)
    if promote and (final_setting is None or final_setting.name != meta.reference.name):
        raise UserError(
            f"the final training of a search against table {table.name!r} is its reference "
            f"({meta.reference.label}); leave the --final-* and --fid-* options out.",
            field="final",
        )


def _ns(spec: EvalSpec) -> str:
    return f" N={spec.score.num_samples} S={spec.score.steps}"
