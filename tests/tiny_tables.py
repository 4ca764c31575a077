"""Hand-made tables for tests: a 4-architecture space, tiny protocols, scores the test chooses."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.execute.table import (
    REFERENCE,
    Table,
    TableArch,
    TableMeta,
    TableRow,
    write_meta,
    write_rows,
)
from diffnas.experiments.study import StudyConfig
from diffnas.experiments.tabulate import table_settings
from diffnas.model.cost import measure_cost
from diffnas.space.search_space import SearchSpace

# Four architectures: two levels of 8 channels, 1 or 2 blocks, middle attention or not.
FOUR = SearchSpace(
    name="four", image_size=16, in_channels=1, objective="ddpm", base_channels=[8],
    num_levels=[2], channel_mult_values=[1], num_res_blocks=[1, 2], attention_resolutions=[],
    mid_attention=[True, False], head_channels=[8], norm_groups=[8],
    budget={"max_gmacs": 1.0, "min_gmacs": 0.0001},
)  # fmt: skip
FOUR_DATA = DataSpec(kind="digits", subset=64, image_size=16)
# The options of the command line that would build such a table (tests/test_experiments_tabulate.py)
FOUR_OPTIONS = [
    "--data", "digits", "--data-subset", "64", "--proxy-steps", "2,4", "--proxy-batch-size", "4",
    "--metrics", "rfid,loss", "--score-samples", "8", "--score-steps", "2",
    "--reference-steps", "4", "--reference-batch-size", "4", "--reference-samples", "8",
    "--reference-score-steps", "2", "--device", "cpu",
]  # fmt: skip
FOUR_STUDY = StudyConfig(
    data="digits", data_subset=64, proxy_steps=[2, 4], metrics=["rfid", "loss"],
    score_samples=[8], score_steps=[2],
    proxy={"recipe": "proxy", "recipe_overrides": {"batch_size": 4}, "device": "cpu"},
    reference={
        "recipe": "full", "recipe_overrides": {"steps": 4, "batch_size": 4, "ema_warmup": True,
                                               "checkpoint_every": 500},
        "score": {"metric": "fid", "num_samples": 8, "steps": 2}, "device": "cpu",
    },
)  # fmt: skip
SETTINGS = ("s2-rfid-n8-s2", "s2-loss", "s4-rfid-n8-s2", "s4-loss", REFERENCE)


@cache
def _four_archs() -> tuple[tuple[str, TableArch], ...]:
    out = {}
    for arch in FOUR.enumerate():
        cost = measure_cost(arch)
        out[arch.arch_hash()] = TableArch(arch=arch, macs=cost.macs, params=cost.params)
    assert len(out) == 4
    return tuple(out.items())


def four_archs() -> dict[str, TableArch]:
    """arch_id -> architecture and cost, in the space's enumeration order."""
    return dict(_four_archs())


Score = Callable[[int, str, int], float | None]  # (arch index, setting, seed) -> score


def make_table(
    stem: Path,
    score: Score,
    *,
    seeds: tuple[int, ...] = (0, 1),
    reference_seeds: tuple[int, ...] | None = None,
    device_seconds: Callable[[int, str, int], float] = lambda a, s, k: 10.0 * (a + 1) + k,
) -> Table:
    """Write and load a table of the four architectures whose scores `score` decides (None:
    the evaluation diverged)."""
    archs = four_archs()
    meta = TableMeta(
        name=stem.name, space=FOUR, objective="ddpm", data=FOUR_DATA, data_fingerprint="f" * 16,
        settings=table_settings(FOUR_STUDY, FOUR, FOUR_DATA), seeds=list(seeds), archs=archs,
        command="hand-made", reference_seeds=None if reference_seeds is None else list(reference_seeds),
    )  # fmt: skip
    rows = []
    for a, (arch_id, entry) in enumerate(archs.items()):
        for setting in SETTINGS:
            for seed in meta.seeds_of(setting):
                value = score(a, setting, seed)
                rows.append(
                    TableRow(
                        arch_id=arch_id, setting=setting, seed=seed,
                        status="complete" if value is not None else "diverged", score=value,
                        score_label=meta.setting(setting).score.label, final_loss=0.5,
                        device_seconds=device_seconds(a, setting, seed), train_device_seconds=1.0,
                        wall_seconds=2.0, device="cpu", macs=entry.macs, params=entry.params,
                    )
                )  # fmt: skip
    write_meta(stem, meta)
    write_rows(stem, rows)
    return Table.load(stem)
