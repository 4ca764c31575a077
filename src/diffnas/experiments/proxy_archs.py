"""The architectures a proxy-check compares: N distinct in-budget ones, uniform draws from the
space with `arch_seed` or the trained candidates of a search's run folder (`--archs-from`),
each with its cost (`ArchEntry`, the rows of `archs.json`)."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import BaseModel

from diffnas.errors import UserError
from diffnas.execute.table import TableArch
from diffnas.experiments.proxy_options import ProxyCheckConfig, search_config
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.search import study as study_mod
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


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


def choose_archs(config: ProxyCheckConfig, space: SearchSpace) -> list[ArchEntry]:
    """N distinct in-budget architectures: uniform draws with `arch_seed`, or a search's trials."""
    if config.archs_from:
        candidates = search_trials(Path(config.archs_from))
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


def search_trials(run_dir: Path) -> list[tuple[ArchConfig, str]]:
    """The trained candidates of a search run folder, in trial order."""
    config = search_config(run_dir)
    memory = study_mod.load_memory(study_mod.open_study(run_dir, config.storage))
    return [
        (t.arch, f"trial {t.number} of {run_dir.name}")
        for t in memory
        if t.arch is not None and t.status != "rejected"
    ]
