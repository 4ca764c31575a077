"""The table engine of `diffnas tabulate` and `diffnas proxy-check`: architectures x training
runs x seeds, each checkpoint scored several ways, the rows appended to a table.

Both commands evaluate a set of architectures (`tabulate`: every one of a small space within
its budget; `proxy-check`: a sample, or a search's candidates) with the same protocols:

- the proxy recipe once per step count in `proxy_steps`; that checkpoint is scored every way
  asked - RFID and KID at each N and S, and the final training loss (the mean of the run's
  last tenth) - by the worker itself (`EvalJob.extra_scores`), so one training serves every
  setting of its length;
- the reference recipe, longer, scored by the reference protocol;

each with `seeds` seeds. Every (step count, score) pair is a proxy *setting*; the reference is
one more. The unit of work is one training run of one architecture with one seed; it goes
through any executor (inline, subprocess, pool, ray, queue) as an ordinary `EvalJob`, and its
rows (one per setting it scores) are written to the table (`diffnas.execute.table`) as it
finishes. A kill at any moment loses no row: a resumed build skips the runs whose rows are
there and continues an interrupted run from its checkpoint.

Each step count is a run of its own, not an intermediate checkpoint of the longest: the proxy
recipe's cosine learning rate and warm-up are fitted to the run's length.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from diffnas import __version__
from diffnas.data.datasets import DataSpec, parse_data
from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import forget_result
from diffnas.execute.table import (
    REFERENCE,
    Table,
    TableArch,
    TableMeta,
    TableRow,
    TableSetting,
    read_meta,
    read_rows,
    table_files,
    write_meta,
    write_rows,
)
from diffnas.experiments.compute import run_flops
from diffnas.experiments.inputs import config_error
from diffnas.experiments.proxy_summary import paired_scores
from diffnas.experiments.ranking import seed_to_seed, split_half
from diffnas.experiments.study import StudyConfig, study_fields
from diffnas.limits import MAX_TABLE_ARCHS
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.search_space import SearchSpace
from diffnas.train.checkpoint import CHECKPOINT

# fewer architectures than this and a tau says nothing (4 give only 6 pairs)
MIN_CEILING_ARCHS = 4


class TabulateConfig(StudyConfig):
    """Every option of `diffnas tabulate` (saved as `options.json`; `--resume` reloads it)."""

    space: str = Field("micro", description="space preset or YAML file (small: it is enumerated)")
    name: str | None = Field(None, description="the table's name (default SPACE-DATA)")
    max_archs: int = Field(
        MAX_TABLE_ARCHS, ge=1, description="refuse a space with more choice combinations than this"
    )

    def table_name(self, space: SearchSpace) -> str:
        return self.name or f"{Path(self.space).stem}-{parse_data(self.data).kind}"


def build_tabulate_config(options: dict[str, Any]) -> TabulateConfig:
    given = {k: v for k, v in options.items() if v is not None}
    fields = study_fields(given)
    fields.update({k: given[k] for k in ("name", "max_archs") if k in given})
    try:
        return TabulateConfig(**fields)
    except ValidationError as err:
        raise config_error(err, "tabulate option") from None


# ----- the architectures -----


def enumerate_archs(space: SearchSpace, max_archs: int = MAX_TABLE_ARCHS) -> dict[str, TableArch]:
    """Every architecture of `space` within its budget, by arch_id; a space with more than
    `max_archs` choice combinations is refused, naming its count."""
    count = space.combinations()
    if count > max_archs:
        raise UserError(
            f"space {space.name!r} has {count:,} combinations of choices, more than the "
            f"{max_archs:,} tabulate enumerates (--max-archs): tabulate a smaller space (fewer "
            "choices per dimension, a tighter budget), such as the bundled 'micro'.",
            field="space",
        )
    found = {}
    for arch in space.enumerate():
        cost = measure_cost(arch)
        if budget_verdict(cost, space.budget)[0]:
            found[arch.arch_hash()] = TableArch(arch=arch, macs=cost.macs, params=cost.params)
    if not found:
        raise UserError(f"space {space.name!r} has no architecture within its budget", "space")
    return found


# ----- the table's settings and units of work -----


def table_settings(config: StudyConfig, space: SearchSpace, data: DataSpec) -> list[TableSetting]:
    """The proxy settings and the reference as the table records them."""
    extractor = config.proxy.score.extractor
    out = []
    for setting in config.settings():
        spec = config.proxy_spec(setting.steps, setting)
        out.append(
            TableSetting(
                name=setting.key, role="proxy", label=setting.label(extractor), spec=spec,
                recipe=spec.train_recipe(space.objective, data.kind),
            )
        )  # fmt: skip
    ref = config.reference
    recipe = ref.train_recipe(space.objective, data.kind)
    label = f"{recipe.steps} steps ({ref.recipe}), {ref.score.label}"
    if ref.score.metric != "loss":
        label += f" N={ref.score.num_samples} S={ref.score.steps}"
    out.append(TableSetting(name=REFERENCE, role="reference", label=label, spec=ref, recipe=recipe))
    return out


@dataclass(frozen=True)
class Unit:
    """One training run of one architecture with one seed, and the settings its checkpoint
    scores: `scores` maps each setting's name to its name in the job ("" for the job's own)."""

    arch_id: str
    seed: int
    job: EvalJob
    scores: dict[str, str]


def plan_units(
    settings: list[TableSetting],
    archs: dict[str, TableArch],
    seeds: list[int],
    reference_seeds: list[int],
    objective: str,
    data: DataSpec,
    work_dir: Path,
    cache_dir: Path,
) -> list[Unit]:
    """Every run, in the order that answers the first question first. The reference runs come
    first, architecture by architecture with their seeds side by side: a partial table then
    already says how well the reference ranks itself from seed to seed (the noise ceiling), and
    a reference too short to rank itself is found before hours go into proxy runs. The proxy
    runs follow seed by seed (a partial table holds whole seeds), then by architecture and
    length."""
    runs: dict[str, list[TableSetting]] = {}
    for s in settings:
        runs.setdefault(REFERENCE if s.role == "reference" else f"proxy-{s.steps:06d}", []).append(
            s
        )
    proxies = [run for run in runs if run != REFERENCE]
    order = (
        [(seed, a, REFERENCE) for a in archs for seed in reference_seeds]
        if REFERENCE in runs
        else []
    )
    order += [(seed, a, run) for seed in seeds for a in archs for run in proxies]
    units = []
    for seed, arch_id, run in order:
        main, *more = runs[run]
        job = EvalJob(
            arch=archs[arch_id].arch, objective=objective, data=data, spec=main.spec,  # type: ignore[arg-type]
            recipe=main.recipe, seed=seed,
            workdir=str(work_dir / arch_id / f"{run}-seed{seed}"),
            cache_dir=str(cache_dir), extra_scores={s.name: s.score for s in more},
        )  # fmt: skip
        names = {main.name: "", **{s.name: s.name for s in more}}
        units.append(Unit(arch_id, seed, job, names))
    return units


def pending(units: list[Unit], have: set[tuple[str, str, int]]) -> list[Unit]:
    """The runs with a row still missing from `have` ((arch_id, setting, seed) keys)."""
    return [u for u in units if any((u.arch_id, s, u.seed) not in have for s in u.scores)]


def unit_rows(
    unit: Unit, result: EvalResult, settings: dict[str, TableSetting], entry: TableArch
) -> list[TableRow]:
    """The table rows of a finished run: one per setting it scores."""
    rows = []
    train_s = result.phase_device_s.get("train", result.device_s)
    for name, key in unit.scores.items():
        score = None
        if result.status == "complete":
            score = next(iter(result.scores.values())) if key == "" else result.extra_scores[key]
        protocol = (score or {}).get("protocol") or {}
        own_s = result.phase_device_s.get(key or "score", 0.0)
        rows.append(
            TableRow(
                arch_id=unit.arch_id, setting=name, seed=unit.seed, status=result.status,
                score=None if score is None else float(score["value"]),
                score_label=settings[name].score.label, final_loss=result.train.get("last_loss"),
                device_seconds=round(train_s + own_s, 3), train_device_seconds=train_s,
                wall_seconds=result.wall_s, device=result.device or "", macs=entry.macs,
                params=entry.params, weights_sha256=protocol.get("weights_sha256", ""),
                error=(result.error or "")[:500],
            )
        )  # fmt: skip
    return rows


class Tabulation:
    """One table being built in `stem` (NAME.csv, NAME.json); `run()` resumes where it stopped."""

    def __init__(
        self,
        config: StudyConfig,
        space: SearchSpace,
        stem: Path,
        *,
        work_dir: Path,
        cache_dir: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.space, self.stem = config, space, Path(stem)
        self.data = config.data_spec(space)
        self.work_dir, self.cache_dir, self.log = work_dir, cache_dir, log

    def start(self, archs: dict[str, TableArch], fingerprint: str, command: str) -> TableMeta:
        """The table's metadata: written now for a new table, read back for a resumed one."""
        if table_files(self.stem)[1].is_file():
            return self._grown(read_meta(self.stem))
        import diffusers
        import torch

        meta = TableMeta(
            name=self.stem.name, space=self.space, objective=self.space.objective,
            data=self.data, data_fingerprint=fingerprint,
            settings=table_settings(self.config, self.space, self.data),
            seeds=self.config.seed_list(), reference_seeds=self._reference_seeds(),
            archs=archs, command=command,
            versions={
                "diffnas": __version__, "torch": torch.__version__,
                "diffusers": diffusers.__version__, "python": platform.python_version(),
                "platform": platform.platform(),
            },
        )  # fmt: skip
        write_meta(self.stem, meta)
        return meta

    def _reference_seeds(self) -> list[int] | None:
        seeds = self.config.reference_seed_list()
        return None if seeds == self.config.seed_list() else seeds

    def _grown(self, meta: TableMeta) -> TableMeta:
        """A resumed table's metadata, with the reference seeds the options now ask for: a
        reference that ranks itself too weakly is made firmer by more seeds without touching
        a finished row. Fewer seeds than recorded are refused (rows would be orphaned)."""
        wanted, recorded = self.config.reference_seed_list(), meta.seeds_of(REFERENCE)
        if wanted == recorded:
            return meta
        if not set(recorded) < set(wanted):
            raise UserError(
                f"the table's reference has seeds {recorded}; --reference-seeds may only add "
                f"seeds after them (asked: {wanted})",
                field="reference_seeds",
            )
        self.log(f"reference seeds {recorded} -> {wanted}: the new reference runs go first")
        meta.reference_seeds = None if wanted == meta.seeds else wanted
        write_meta(self.stem, meta)
        return meta

    def run(self, meta: TableMeta, executor: Executor | None = None) -> Table:
        """Evaluate every run whose rows are not in the table yet, writing them as each ends.

        A run that ended `failed` (an exception: a fault of that sitting, not a verdict on the
        architecture like `diverged` or `oom`) is run again: its rows leave the table and its
        result.json its folder, so one bad sitting does not stay in the table for good."""
        rows = read_rows(self.stem)
        failed = {(r.arch_id, r.setting, r.seed) for r in rows if r.status == "failed"}
        rows = [r for r in rows if r.status != "failed"]
        have = {(r.arch_id, r.setting, r.seed) for r in rows}
        settings = {s.name: s for s in meta.settings}
        units = plan_units(
            meta.settings, meta.archs, meta.seeds, meta.seeds_of(REFERENCE), meta.objective,
            meta.data, self.work_dir, self.cache_dir,
        )  # fmt: skip
        todo = pending(units, have)
        for unit in todo:
            if any((unit.arch_id, s, unit.seed) in failed for s in unit.scores):
                forget_result(unit.job.workdir)
                self.log(f"{unit.arch_id} {Path(unit.job.workdir).name}: failed before, run again")
        sitting = {"start": time.time(), "end": time.time(), "runs": 0, "rows_before": len(rows)}
        meta.notes.setdefault("sittings", []).append(sitting)
        self.log(f"{len(units) - len(todo)} of {len(units)} runs in the table; {len(todo)} to go")
        owned = executor is None
        executor = executor or self.config.make_executor()
        try:
            for index, result in executor.run_many([u.job for u in todo]):
                unit = todo[index]
                new = unit_rows(unit, result, settings, meta.archs[unit.arch_id])
                rows += [r for r in new if (r.arch_id, r.setting, r.seed) not in have]
                write_rows(self.stem, rows)
                have.update((r.arch_id, r.setting, r.seed) for r in new)
                self._record_protocols(meta, unit, result)
                sitting.update(end=time.time(), runs=sitting["runs"] + 1)
                write_meta(self.stem, meta)
                (Path(unit.job.workdir) / "train" / CHECKPOINT).unlink(missing_ok=True)
                self._log_unit(
                    unit, result, new, len(units) - len(todo) + sitting["runs"], len(units)
                )
                if REFERENCE in unit.scores and result.status == "complete":
                    self.log(ceiling_so_far(Table(meta, rows, self.stem)))
        finally:
            if owned:
                executor.close()
        return Table(meta, rows, self.stem)

    def _record_protocols(self, meta: TableMeta, unit: Unit, result: EvalResult) -> None:
        """Each setting's score protocol, from its first finished row; a later row scored with
        other extractor weights is called out (its rows carry their own hash)."""
        if result.status != "complete":
            return
        for name, key in unit.scores.items():
            score = next(iter(result.scores.values())) if key == "" else result.extra_scores[key]
            protocol = score.get("protocol") or {}
            setting = meta.setting(name)
            if setting.protocol is None:
                setting.protocol = protocol
            elif protocol.get("weights_sha256") != setting.protocol.get("weights_sha256"):
                self.log(
                    f"  warning: {name} of {unit.arch_id} was scored with extractor weights "
                    f"{protocol.get('weights_sha256')!s:.12} but the table's first row with "
                    f"{setting.protocol.get('weights_sha256')!s:.12}; their scores do not compare"
                )

    def _log_unit(
        self, unit: Unit, result: EvalResult, rows: list[TableRow], done: int, total: int
    ) -> None:
        run = Path(unit.job.workdir).name
        if result.status != "complete":
            self.log(f"[{done}/{total}] {unit.arch_id} {run}: {result.status} {result.error or ''}")
            return
        shown = ", ".join(f"{r.setting} {r.score:.4g}" for r in rows if r.score is not None)
        self.log(f"[{done}/{total}] {unit.arch_id} {run} ({result.wall_s:.0f} s): {shown}")


def ceiling_so_far(table: Table) -> str:
    """How well the reference ranks itself so far: Kendall's tau between its seeds over the
    architectures finished on every seed - the line a builder watches to stop a reference too
    short to rank itself early (`diffnas proxy-check` reports it with its interval). With 4
    or more reference seeds also the tau between the means of two halves of them
    (`split_half`): how well the mean reference a table uses ranks itself."""
    archs, _, reference = paired_scores(table, REFERENCE)
    seeds = len(table.seeds_of(REFERENCE))
    if seeds < 2 or len(archs) < MIN_CEILING_ARCHS:
        return f"  ceiling: {len(archs)} architectures on every seed so far"
    means = f", {seeds // 2}-seed means {split_half(reference):+.2f}" if seeds >= 4 else ""
    return (
        f"  ceiling so far: seed-to-seed tau {seed_to_seed(reference):+.2f}{means} over "
        f"{len(archs)} architectures"
    )


def runs_to_go(
    config: StudyConfig, space: SearchSpace, archs: dict[str, TableArch], stem: Path
) -> dict[str, int]:
    """How many of the runs these options plan are in the table at `stem` already, and how
    many are left (what `--resume ... --dry-run` adds to the plan)."""
    have = set()
    if table_files(stem)[1].is_file():
        have = {(r.arch_id, r.setting, r.seed) for r in read_rows(stem) if r.status != "failed"}
    data = config.data_spec(space)
    units = plan_units(
        table_settings(config, space, data), archs, config.seed_list(),
        config.reference_seed_list(), space.objective, data, Path("."), Path("."),
    )  # fmt: skip
    left = len(pending(units, have))
    return {"runs_in_the_table": len(units) - left, "runs_to_go": left}


def plan(config: StudyConfig, space: SearchSpace, archs: dict[str, TableArch]) -> dict[str, Any]:
    """What a table build runs and its compute, before anything runs (`--dry-run`)."""
    settings = table_settings(config, space, config.data_spec(space))
    proxy_settings = [s for s in settings if s.role == "proxy"]
    reference = [s for s in settings if s.role == "reference"]
    seeds, reference_seeds = config.seed_list(), config.reference_seed_list()
    proxy_flops = sum(run_flops(proxy_settings, space, a.macs) for a in archs.values())
    reference_flops = sum(run_flops(reference, space, a.macs) for a in archs.values())
    return {
        "archs": len(archs),
        "gmacs": [
            min(a.macs for a in archs.values()) / 1e9,
            max(a.macs for a in archs.values()) / 1e9,
        ],
        "seeds": seeds,
        "reference_seeds": reference_seeds,
        "settings": [f"{s.name}: {s.label}" for s in settings],
        "runs": len(archs) * (len(config.proxy_steps) * len(seeds) + len(reference_seeds)),
        "rows": len(archs) * (len(proxy_settings) * len(seeds) + len(reference_seeds)),
        "training_and_sampling_tflops": (
            proxy_flops * len(seeds) + reference_flops * len(reference_seeds)
        )
        / 1e12,
    }
