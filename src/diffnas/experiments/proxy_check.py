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

This module runs the study; its options are `proxy_options.py`'s, the architectures are
chosen in `proxy_archs.py`, the statistics and files written in `proxy_summary.py`.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffnas.data.datasets import ImageData, load_images
from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.table import REFERENCE, Table, table_files
from diffnas.experiments.compute import setting_flops, training_flops
from diffnas.experiments.proxy_archs import ArchEntry, choose_archs
from diffnas.experiments.proxy_options import ProxyCheckConfig, build_config, load_config
from diffnas.experiments.proxy_summary import summarise, write_summary
from diffnas.experiments.tabulate import Tabulation, table_settings
from diffnas.runs import OPTIONS_FILE, read_file, write_json
from diffnas.space.search_space import SearchSpace, load_space

ARCHS_FILE = "archs.json"
TABLE_NAME = "table"  # the study's table: table.csv and table.json in the run folder
OLD_RESULTS_FILE = "results.jsonl"  # the study's record before the table format

# The command (`cli/proxy_check_cmd.py`) reads its options through this module.
__all__ = [
    "ARCHS_FILE",
    "OLD_RESULTS_FILE",
    "TABLE_NAME",
    "ProxyCheck",
    "build_config",
    "load_config",
    "plan",
    "prepare",
]


def prepare(
    config: ProxyCheckConfig, *, allow_download: bool = True
) -> tuple[SearchSpace, ImageData, list[ArchEntry]]:
    """Everything checked before a run folder exists (`StudyConfig.check`: devices, executor,
    recipes, data and its scoring), and the architectures the study compares."""
    space, images = config.check(allow_download=allow_download)
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
        if (self.run_dir / OLD_RESULTS_FILE).is_file() and not table_files(self.table_stem)[
            1
        ].is_file():
            raise UserError(
                f"{str(self.run_dir)!r} is a proxy-check folder from before the table format "
                f"({OLD_RESULTS_FILE}); this diffnas cannot continue it: start a new study.",
                field="resume",
            )
        archs_file = self.run_dir / ARCHS_FILE
        if archs_file.exists():  # resume: the architectures chosen at the start
            archs = read_file(archs_file, list[ArchEntry], "proxy-check architectures")
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
        # saved once the table accepted them (a refused --reference-seeds leaves them as they were)
        write_json(self.run_dir / OPTIONS_FILE, self.config.model_dump(mode="json"))
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
    seeds, reference_seeds = config.seeds, len(config.reference_seed_list())
    return {
        "archs": [
            {"index": a.index, "arch": a.arch.summary(), "gmacs": a.macs / 1e9, "source": a.source}
            for a in archs
        ],
        "seeds": config.seed_list(),
        "reference_seeds": config.reference_seed_list(),
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
        "reference_tflops": reference_seeds
        * sum(setting_flops(reference, space, a.macs) for a in archs)
        / 1e12,
    }
