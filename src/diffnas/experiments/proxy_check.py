"""`diffnas proxy-check`: does the proxy rank architectures the way a longer run does?

N distinct in-budget architectures (uniform draws from the space, or the trained candidates
of a search's run folder) go through the table engine (`diffnas.experiments.tabulate`, the
one `diffnas tabulate` uses): each is trained with the proxy recipe once per step count in
`proxy_steps`, its checkpoint scored several ways (RFID and KID at each N and S, the final
training loss), and with the reference recipe, longer - each with `seeds` seeds. The summary
(`proxy_summary.py`) gives per proxy setting Kendall's tau and Spearman's rho against the mean
reference with bootstrap intervals over the architectures, next to the reference's own
seed-to-seed agreement (the noise ceiling), the top-k overlap and the compute of each side, so
a user can pick the cheapest setting that still ranks well. Training and scoring are the
search's own evaluation (`evaluate_candidate`), so the study measures what the search uses.

Run folder (`--resume RUN_DIR` skips the runs whose rows are in the table and continues an
interrupted one from its training checkpoint):

    options.json    every resolved option (ProxyCheckConfig)
    archs.json      the architectures with their cost
    table.csv, table.json   the table: one row per architecture x setting x seed
    archs/<arch_id>/proxy-000200-seed0/   job.json, result.json, train/, samples.png
    archs/<arch_id>/reference-seed0/
    summary.json, summary.md, scatter.png
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from diffnas.data.datasets import ImageData, load_images
from diffnas.errors import UserError
from diffnas.execute.executors import Executor
from diffnas.execute.table import REFERENCE, Table, TableArch
from diffnas.experiments.compute import training_flops
from diffnas.experiments.inputs import config_error, load_space_data
from diffnas.experiments.proxy_summary import summarise, write_summary
from diffnas.experiments.tabulate import (
    StudyConfig,
    Tabulation,
    setting_flops,
    study_fields,
    table_settings,
)
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.runs import OPTIONS_FILE, load_options, read_json, write_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace, load_space

ARCHS_FILE = "archs.json"
TABLE_NAME = "table"  # the study's table: table.csv and table.json in the run folder
OLD_RESULTS_FILE = "results.jsonl"  # the study's record before the table format


class ProxyCheckConfig(StudyConfig):
    """Every option of a proxy-check study (saved as `options.json`; `--resume` reloads it)."""

    num_archs: int = Field(8, ge=3, le=1000, description="architectures compared")
    arch_seed: int = Field(0, description="seed of the uniform architecture draws")
    archs_from: str | None = Field(
        None, description="take the architectures from this search run folder instead"
    )
    top_k: int = Field(3, ge=1, description="k of the top-k overlap")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples of the architectures")


class ArchEntry(BaseModel):
    index: int
    arch: ArchConfig
    arch_hash: str
    macs: int
    params_m: float
    params: int = 0
    source: str  # "sample" or "trial N of RUN_DIR"

    def table_arch(self) -> TableArch:
        params = self.params or round(self.params_m * 1e6)
        return TableArch(arch=self.arch, macs=self.macs, params=params)


def build_config(options: dict[str, Any]) -> ProxyCheckConfig:
    """The config of the command line's flat options, where None means the default; with
    `archs_from`, the space and data default to that search's."""
    given = {k: v for k, v in options.items() if v is not None}
    if "archs_from" in given:
        for key, value in search_defaults(Path(given["archs_from"])).items():
            if value is not None:
                given.setdefault(key, value)
    fields = study_fields(given)
    fields.update(
        {k: given[k] for k in ("arch_seed", "archs_from", "top_k", "bootstrap") if k in given}
    )
    if "archs" in given:
        fields["num_archs"] = given["archs"]
    try:
        return ProxyCheckConfig(**fields)
    except ValidationError as err:
        raise config_error(err, "proxy-check option") from None


def load_config(run_dir: Path) -> ProxyCheckConfig:
    return load_options(run_dir, ProxyCheckConfig, kind="proxy-check")


# ----- choosing the architectures -----


def choose_archs(config: ProxyCheckConfig, space: SearchSpace) -> list[ArchEntry]:
    """N distinct in-budget architectures: uniform draws with `arch_seed`, or a search's trials."""
    if config.archs_from:
        candidates = _search_trials(Path(config.archs_from))
    else:
        rng = random.Random(config.arch_seed)
        candidates = ((space.sample(rng), "sample") for _ in range(200 * config.num_archs))
    chosen: list[ArchEntry] = []
    seen: set[str] = set()
    for arch, source in candidates:
        if arch.key() in seen or not space.contains(arch):
            continue
        seen.add(arch.key())
        cost = measure_cost(arch)
        if not budget_verdict(cost, space.budget)[0]:
            continue
        chosen.append(
            ArchEntry(
                index=len(chosen), arch=arch, arch_hash=arch.arch_hash(), macs=cost.macs,
                params_m=round(cost.params_m, 5), params=cost.params, source=source,
            )
        )  # fmt: skip
        if len(chosen) == config.num_archs:
            break
    if len(chosen) < config.num_archs:
        where = (
            f"search {config.archs_from!r} has"
            if config.archs_from
            else f"space {space.name!r} gave"
        )
        raise UserError(
            f"{where} only {len(chosen)} distinct architectures within the budget but "
            f"{config.num_archs} were asked; ask for at most {len(chosen)} with --archs "
            "(a ranking needs at least 3)",
            field="num_archs",
        )
    return chosen


def _search_config(run_dir: Path) -> SearchConfig:
    return load_options(run_dir, SearchConfig, kind="search", option="--archs-from")


def _search_trials(run_dir: Path) -> list[tuple[ArchConfig, str]]:
    """The trained candidates of a search run folder, in trial order."""
    config = _search_config(run_dir)
    memory = study_mod.load_memory(study_mod.open_study(run_dir, config.storage))
    return [
        (t.arch, f"trial {t.number} of {run_dir.name}")
        for t in memory
        if t.arch is not None and t.status != "rejected"
    ]


def search_defaults(run_dir: Path) -> dict[str, Any]:
    """The space and data of a search run folder: a study of its candidates uses the same."""
    config = _search_config(run_dir)
    return {
        "space": config.space,
        "data": config.data,
        "data_subset": config.data_subset,
        "data_image_size": config.data_image_size,
    }


# ----- the study -----


def prepare(config: ProxyCheckConfig) -> tuple[SearchSpace, ImageData, list[ArchEntry]]:
    """Everything checked before a run folder exists: space, recipes, data, architectures."""
    space = load_space(config.space)
    for spec in (config.proxy, config.reference):
        spec.train_recipe(space.objective)  # UserError for a bad override or device
    images = load_space_data(space, config.data_spec(space))
    return space, images, choose_archs(config, space)


class ProxyCheck:
    """One study in one run folder; `run()` resumes where an earlier call stopped."""

    def __init__(
        self,
        config: ProxyCheckConfig,
        run_dir: Path,
        *,
        log: Callable[[str], None] = print,
        command: str = "",
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.space = load_space(config.space)
        self.data = config.data_spec(self.space)
        self.log = log
        self.command = command

    def run(
        self, archs: list[ArchEntry] | None = None, executor: Executor | None = None
    ) -> dict[str, Any]:
        """Evaluate every run whose rows are not in the table yet, then write the summary."""
        if (self.run_dir / OLD_RESULTS_FILE).is_file() and not self.table_stem.with_suffix(
            ".json"
        ).is_file():
            raise UserError(
                f"{str(self.run_dir)!r} is a proxy-check folder from before the table format "
                f"({OLD_RESULTS_FILE}); this diffnas cannot continue it: start a new study.",
                field="resume",
            )
        write_json(self.run_dir / OPTIONS_FILE, self.config.model_dump(mode="json"))
        archs_file = self.run_dir / ARCHS_FILE
        if archs_file.exists():  # resume: the architectures chosen at the start
            archs = [ArchEntry.model_validate(a) for a in read_json(archs_file)]
        else:
            archs = archs if archs is not None else choose_archs(self.config, self.space)
            write_json(archs_file, [a.model_dump(mode="json") for a in archs])
        tabulation = Tabulation(
            self.config, self.space, self.table_stem, work_dir=self.run_dir / "archs",
            cache_dir=self.run_dir.parent / "cache",  # shared with searches under --runs
            log=self.log,
        )  # fmt: skip
        meta = tabulation.start(
            {a.arch_hash: a.table_arch() for a in archs},
            load_images(self.data).fingerprint,
            self.command,
        )
        table = tabulation.run(meta, executor)
        summary = self.summarise(table, archs)
        write_summary(self.run_dir, summary)
        return summary

    @property
    def table_stem(self) -> Path:
        return self.run_dir / TABLE_NAME

    def summarise(self, table: Table, archs: list[ArchEntry]) -> dict[str, Any]:
        cfg = self.config
        return summarise(
            table, top_k=cfg.top_k, resamples=cfg.bootstrap, seed=cfg.seed,
            index={a.arch_hash: a.index for a in archs},
        )  # fmt: skip


def plan(config: ProxyCheckConfig, space: SearchSpace, archs: list[ArchEntry]) -> dict[str, Any]:
    """What the study will run and its compute, before anything runs (`--dry-run`)."""
    settings = {s.name: s for s in table_settings(config, space, config.data_spec(space))}
    reference = settings.pop(REFERENCE)
    proxy_runs = {s.steps: s for s in settings.values()}  # one training per run length
    seeds = config.seeds
    return {
        "archs": [
            {"index": a.index, "arch": a.arch.summary(), "gmacs": a.macs / 1e9, "source": a.source}
            for a in archs
        ],
        "seeds": config.seed_list(),
        "proxy_runs_per_arch_and_seed": len(config.proxy_steps),
        "settings": [s.label for s in settings.values()],
        "reference": reference.label,
        "proxy_training_tflops": seeds
        * sum(
            training_flops(a.macs, s.steps, s.batch_size)
            for a in archs
            for s in proxy_runs.values()
        )
        / 1e12,
        "reference_tflops": seeds
        * sum(setting_flops(reference, space, a.macs) for a in archs)
        / 1e12,
    }
