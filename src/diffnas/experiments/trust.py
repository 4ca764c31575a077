"""How far to trust a search's winner: its proxy's ranking measured on a bundled table.

A search ranks candidates by a proxy (a short run and a cheap score). Where diffnas ships a
table of the search's space on its data (`diffnas.execute.table`: every architecture evaluated
under several proxy settings and a long reference, with several seeds), how well that proxy
ranks the space is known: Kendall's tau of the proxy against the mean reference, with its
bootstrap interval, next to the reference's own seed-to-seed tau, the ceiling - the numbers
`diffnas proxy-check` prints for the table (`proxy_summary`), computed the same way.

`diffnas status`, `diffnas report` and the end of `diffnas search` print it as one line next
to the winner (`trust_line`). The table is found by what it records - its space (names aside)
and its data - not by its file name. A table without the search's exact protocol gives its
closest setting's tau, labelled as such; a space without a bundled table gives no line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.execute.table import (
    REFERENCE,
    Table,
    TableMeta,
    TableSetting,
    bundled_tables,
    protocol_key,
    read_meta,
    resolve_table,
    table_files,
)
from diffnas.execute.table_executor import same_data, same_space
from diffnas.experiments.proxy_summary import paired_scores
from diffnas.experiments.ranking import Estimate, kendall_estimate
from diffnas.space.search_space import SearchSpace
from diffnas.train.recipe import TrainRecipe

# The size of a protocol: what `closest` compares on a log scale (twice the steps is as far as
# half of them). The metric comes first: a loss setting is never the closest to an RFID proxy
# while the table has an RFID setting.
SIZES = ("steps", "batch_size", "num_samples", "sampler_steps")


@dataclass(frozen=True)
class ProxyTrust:
    """A search's proxy on a table: its setting (or the closest one), tau and the ceiling."""

    table: str
    wanted: str  # the search's proxy protocol in words
    setting: TableSetting  # the table's setting with that protocol, else the closest one
    exact: bool
    archs: int  # architectures scored on every seed under the setting and the reference
    tau: Estimate  # each proxy seed against the mean reference, averaged over the seeds
    ceiling: Estimate  # each reference seed against the mean of the others
    proxy_settings: tuple[str, ...]  # every proxy setting of the table, by name
    reference: str  # the reference in words
    reference_seeds: int = 2  # with 2, the ceiling is the seed-to-seed tau

    def line(self) -> str:
        """One line of plain text for the status table's footer and the report's answer."""
        tau = self.tau.text() if self.tau.value is not None else "not measurable"
        ceiling = self.ceiling.text() if self.ceiling.value is not None else "not measurable"
        head = f"proxy trust (table {self.table}, {self.archs} architectures): "
        itself = (
            "seed to seed"
            if self.reference_seeds <= 2
            else f"each of its {self.reference_seeds} seeds against the mean of the others"
        )
        measured = (
            f"ranks with Kendall tau {tau} against the reference ({self.reference}); the "
            f"reference against itself, {itself} (the ceiling): {ceiling}."
        )
        if self.exact:
            return f"{head}this search's proxy ({self.wanted}) {measured}"
        return (
            f"{head}no setting with this search's proxy ({self.wanted}); the table has "
            f"{', '.join(self.proxy_settings)}. The closest setting, {self.setting.name} "
            f"({setting_text(self.setting)}), {measured}"
        )


def protocol_text(recipe: TrainRecipe, score: ScoreSpec) -> str:
    """`300 steps x 32, RFID[classifier] N=256 S=20` (the loss samples nothing)."""
    text = f"{recipe.steps} steps x {recipe.batch_size}, {score.label}"
    return text if score.metric == "loss" else f"{text} N={score.num_samples} S={score.steps}"


def setting_text(setting: TableSetting) -> str:
    return protocol_text(setting.recipe, setting.score)


def _sizes(recipe: TrainRecipe, score: ScoreSpec) -> dict[str, float | None]:
    return {
        "steps": recipe.steps,
        "batch_size": recipe.batch_size,
        "num_samples": None if score.metric == "loss" else score.num_samples,
        "sampler_steps": None if score.metric == "loss" else score.steps,
    }


def distance(
    setting: TableSetting, recipe: TrainRecipe, score: ScoreSpec
) -> tuple[bool, float, int, str]:
    """How far `setting` is from the protocol (recipe, score), for sorting: another metric
    first, then the summed |log ratio| of steps, batch, N and S, then how many other fields of
    the protocol differ (learning rate, extractor, sampler, ...), then the name."""
    have, want = _sizes(setting.recipe, setting.score), _sizes(recipe, score)
    # a size one side lacks (the loss samples nothing) is counted by the metric
    far = sum(abs(math.log(have[k] / want[k])) for k in SIZES if have[k] and want[k])
    theirs, ours = _flat(setting.key()), _flat(protocol_key(recipe, score))
    sizes = {"recipe.steps", "recipe.batch_size", "score.num_samples", "score.steps"}
    differ = sum(theirs.get(k) != ours.get(k) for k in (theirs.keys() | ours.keys()) - sizes)
    return setting.score.metric != score.metric, round(far, 9), differ, setting.name


def _flat(key: dict[str, dict[str, object]]) -> dict[str, object]:
    """`protocol_key`'s two parts as one mapping: {"recipe.lr": ..., "score.metric": ...}."""
    return {f"{part}.{k}": v for part, fields in key.items() for k, v in fields.items()}


# ----- the tables, read once per process (a table is small; its files do not change under a
# reader, and their stamp in the cache key keeps a rewritten one from being served stale) -----


def _stamp(stem: Path) -> tuple[str, int, int]:
    csv_path, json_path = table_files(stem)
    return str(stem), csv_path.stat().st_mtime_ns, json_path.stat().st_mtime_ns


@lru_cache(maxsize=16)
def _meta(stamp: tuple[str, int, int]) -> TableMeta:
    return read_meta(stamp[0])


@lru_cache(maxsize=16)
def _table(stamp: tuple[str, int, int]) -> Table:
    return Table.load(stamp[0])


@lru_cache(maxsize=64)
def _tau(stamp: tuple[str, int, int], setting: str) -> tuple[int, Estimate]:
    """Architectures and Kendall tau of `setting` (the reference: the ceiling) on a table."""
    archs, proxy, reference = paired_scores(_table(stamp), setting)
    if setting == REFERENCE:
        return len(archs), kendall_estimate(reference, reference, ceiling=True)
    return len(archs), kendall_estimate(proxy, reference)


def bundled_table_for(space: SearchSpace, data: DataSpec) -> tuple[str, int, int] | None:
    """The bundled table of this space on this data (its stamp), if diffnas ships one. A
    bundled table that cannot be read is passed over: it must not stop a status or a report."""
    for name in bundled_tables():
        try:
            stamp = _stamp(resolve_table(name))
            meta = _meta(stamp)
        except (OSError, UserError):
            continue
        if same_space(space, meta.space) and same_data(data, meta.data, space.image_size):
            return stamp
    return None


def proxy_trust(space: SearchSpace, data: DataSpec, proxy: EvalSpec) -> ProxyTrust | None:
    """How well `proxy` ranks `space` on `data`, measured on its bundled table; None without
    one (or when the table holds no proxy setting at all)."""
    stamp = bundled_table_for(space, data)
    if stamp is None:
        return None
    table = _table(stamp)
    settings = table.settings("proxy")
    if not settings:
        return None
    recipe = proxy.train_recipe(space.objective, data.kind, device_type="cpu")
    wanted = protocol_key(recipe, proxy.score)
    exact = next((s for s in settings if s.key() == wanted), None)
    chosen = exact or min(settings, key=lambda s: distance(s, recipe, proxy.score))
    archs, tau = _tau(stamp, chosen.name)
    _, ceiling = _tau(stamp, REFERENCE)
    return ProxyTrust(
        table=table.name, wanted=protocol_text(recipe, proxy.score), setting=chosen,
        exact=exact is not None, archs=archs, tau=tau, ceiling=ceiling,
        proxy_settings=tuple(s.name for s in settings),
        reference=setting_text(table.meta.reference),
        reference_seeds=len(table.seeds_of(REFERENCE)),
    )  # fmt: skip


def trust_line(space: SearchSpace | None, data: DataSpec, proxy: EvalSpec) -> str | None:
    """`ProxyTrust.line` of a search, or None (no bundled table for its space and data; its
    space file no longer where the search read it)."""
    if space is None:
        return None
    found = proxy_trust(space, data, proxy)
    return found.line() if found is not None else None
