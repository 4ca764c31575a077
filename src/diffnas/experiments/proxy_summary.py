"""What `diffnas proxy-check` concludes from a table (`diffnas.execute.table`) and writes.

Per proxy setting: Kendall's tau and Spearman's rho of each proxy seed against the mean
reference, averaged over the proxy's seeds, with bootstrap intervals over the architectures;
the proxy's own seed-to-seed tau; the spread of its scores over seeds; the top-k overlap; and
the compute of both sides. The reference gets the same row against itself - each seed against
the mean of the others - which is the noise ceiling: no proxy is expected to rank the
architectures better than rerunning the reference does. Written as `summary.json`,
`summary.md` and `scatter.png` (with the seeds' range as error bars).

Works on any table, so a bundled one is summarised without training anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from diffnas.execute.table import REFERENCE, Table, TableSetting
from diffnas.experiments.compute import setting_flops
from diffnas.experiments.ranking import Estimate, seed_agreement, split_half_estimate
from diffnas.layout import SUMMARY_FILE, SUMMARY_MD
from diffnas.markup import markdown_table, plot_text
from diffnas.runs import write_json

SCATTER_FILE = "scatter.png"
CLOSE_TO_BEST = 0.1  # tau within this of the best counts as "ranks as well"


def _matrix(table: Table, setting: str, archs: list[str]) -> np.ndarray:
    """architecture x seed scores of `setting` (rows in `archs` order)."""
    values, seeds = table.values(setting), table.seeds_of(setting)
    scores = [[values[a][s] for s in seeds] for a in archs]
    return np.array(scores, dtype=float).reshape(len(archs), len(seeds))  # (0, seeds) if none


def _complete(table: Table, setting: str) -> set[str]:
    """The architectures with a finished score for every seed under `setting`."""
    seeds = set(table.seeds_of(setting))
    return {a for a, v in table.values(setting).items() if set(v) == seeds}


def paired_scores(table: Table, setting: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The architectures scored on every seed under both `setting` and the reference, and
    their architecture x seed scores under each: what a setting's agreement is measured on."""
    both = _complete(table, setting) & _complete(table, REFERENCE)
    archs = [a for a in table.archs() if a in both]
    return archs, _matrix(table, setting, archs), _matrix(table, REFERENCE, archs)


def _points(
    table: Table, setting: str, archs: list[str], index: dict[str, int]
) -> list[dict[str, Any]]:
    proxy, reference = _matrix(table, setting, archs), _matrix(table, REFERENCE, archs)
    return [
        {
            "arch_id": a,
            "index": index.get(a, i),
            "proxy": float(p.mean()),
            "proxy_seeds": p.tolist(),
            "reference": float(r.mean()),
            "reference_seeds": r.tolist(),
        }  # fmt: skip
        for i, (a, p, r) in enumerate(zip(archs, proxy, reference))
    ]


def _row(
    table: Table,
    setting: TableSetting,
    *,
    top_k: int,
    resamples: int,
    seed: int,
    index: dict[str, int],
) -> dict[str, Any]:
    """One setting against the mean reference over the architectures scored on every seed."""
    archs, proxy, reference_scores = paired_scores(table, setting.name)
    stats = seed_agreement(
        proxy, reference_scores, top_k=top_k, resamples=resamples, seed=seed,
        ceiling=setting.name == REFERENCE,
    )  # fmt: skip
    space = table.meta.space
    reference = table.setting(REFERENCE)
    macs = [table.meta.archs[a].macs for a in archs]
    proxy_cost = sum(setting_flops(setting, space, m) for m in macs)
    reference_cost = sum(setting_flops(reference, space, m) for m in macs)
    return {
        "setting": setting.name,
        "label": setting.label,
        "steps": setting.steps,
        "metric": setting.score.metric,
        "agreement": stats.model_dump(),
        "proxy_tflops": proxy_cost / 1e12,
        "reference_tflops": reference_cost / 1e12,
        "compute_ratio": reference_cost / proxy_cost if proxy_cost else None,
        "points": _points(table, setting.name, archs, index),
    }


def summarise(
    table: Table,
    *,
    top_k: int = 3,
    resamples: int = 2000,
    seed: int = 0,
    index: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Per proxy setting: agreement with the mean reference, next to the reference's ceiling.
    `index`: each arch_id's number in the study (the scatter's labels)."""
    index = index or {a: i for i, a in enumerate(table.archs())}
    kwargs = {"top_k": top_k, "resamples": resamples, "seed": seed, "index": index}
    rows = [_row(table, s, **kwargs) for s in table.settings("proxy")]  # type: ignore[arg-type]
    ceiling = _row(table, table.setting(REFERENCE), **kwargs)  # type: ignore[arg-type]
    finished = _complete(table, REFERENCE)
    _, _, reference = paired_scores(table, REFERENCE)
    means = split_half_estimate(reference, resamples=resamples, seed=seed)
    wall = {
        "proxy_s": _wall(table, "proxy"),
        "reference_s": _wall(table, "reference"),
    }
    return {
        "table": table.name,
        "archs": len(table.archs()),
        "finished": len(finished),
        "seeds": table.seeds,
        "reference_seeds": table.seeds_of(REFERENCE),
        "reference_label": table.setting(REFERENCE).score.label,
        "reference_setting": table.setting(REFERENCE).label,
        "ceiling": ceiling,
        # with 4+ reference seeds: the mean over half of them against the other half's
        "ceiling_of_means": means.model_dump(),
        "settings": rows,
        "best": _best(rows),
        "cheapest_close_to_best": _cheapest_close(rows),
        "wall": wall,
    }


def _wall(table: Table, role: str) -> float:
    """Measured wall time of the runs of `role` (a run's rows share its time: counted once)."""
    names = {s.name for s in table.settings(role)}
    runs = {
        (r.arch_id, r.seed, table.setting(r.setting).steps): r.wall_seconds
        for r in table.rows
        if r.setting in names
    }
    return sum(runs.values())


def _tau(row: dict[str, Any]) -> float | None:
    return row["agreement"]["kendall_tau"]["value"]


def _best(rows: list[dict[str, Any]]) -> str | None:
    ranked = [r for r in rows if _tau(r) is not None]
    return max(ranked, key=_tau)["setting"] if ranked else None


def _cheapest_close(rows: list[dict[str, Any]]) -> str | None:
    """The cheapest setting whose tau is within CLOSE_TO_BEST of the best tau."""
    ranked = [r for r in rows if _tau(r) is not None]
    if not ranked:
        return None
    best = max(_tau(r) for r in ranked)  # type: ignore[type-var]
    close = [r for r in ranked if _tau(r) >= best - CLOSE_TO_BEST]  # type: ignore[operator]
    return min(close, key=lambda r: r["proxy_tflops"])["setting"]


# ----- what it writes -----

TABLE_HEADER = [
    "proxy setting",
    "n",
    "Kendall tau vs mean reference [95% CI]",
    "Spearman rho [95% CI]",
    "seed-to-seed tau",
    "seed sd / arch sd",
    "top-k overlap",
    "proxy TFLOPs",
    "reference / proxy compute",
]


def _cells(row: dict[str, Any], name: str) -> list[str]:
    a = row["agreement"]
    tau = Estimate.model_validate(a["kendall_tau"]).text()
    rho = Estimate.model_validate(a["spearman_rho"]).text()
    repeat = Estimate.model_validate(a["seed_tau"]).text()
    ratio = a["spread"]["ratio"]
    overlap = "-" if a["top_k_overlap"] is None else f"{a['top_k_overlap']:.2f} (k={a['top_k']})"
    compute = "-" if row["compute_ratio"] is None else f"{row['compute_ratio']:.1f}x"
    spread = "-" if ratio is None else f"{ratio:.2f}"
    return [
        name,
        str(a["n"]),
        tau,
        rho,
        repeat,
        spread,
        overlap,
        f"{row['proxy_tflops']:.3g}",
        compute,
    ]


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The summary as table cells, the reference's ceiling first."""
    rows = [_cells(summary["ceiling"], "reference itself (ceiling: each seed vs the others)")]
    for r in summary["settings"]:
        marks = "".join(
            m
            for m, key in (("*", summary["best"]), ("$", summary["cheapest_close_to_best"]))
            if r["setting"] == key
        )
        rows.append(_cells(r, r["label"] + (f" {marks}" if marks else "")))
    return rows


def means_line(summary: dict[str, Any]) -> list[str]:
    """The ceiling of the mean reference in words (none below 4 reference seeds)."""
    means = Estimate(**summary.get("ceiling_of_means") or {"value": None})
    if means.value is None:
        return []
    half = len(summary["reference_seeds"]) // 2
    return [
        f"The reference averaged over {half} seeds against the mean of {half} others "
        f"(Kendall tau, every split of the seeds): {means.text()} - how well the mean "
        "reference ranks itself.",
    ]


def _reference_seeds(summary: dict[str, Any]) -> str:
    seeds = summary.get("reference_seeds", summary["seeds"])
    return "" if seeds == summary["seeds"] else f" (reference: {', '.join(map(str, seeds))})"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / SUMMARY_FILE, summary)
    lines = [
        f"# Proxy check: {summary['finished']} of {summary['archs']} architectures against "
        f"{summary['reference_label']} after the reference recipe ({summary['reference_setting']}), "
        f"seeds {', '.join(map(str, summary['seeds']))}" + _reference_seeds(summary),
        "",
        *markdown_table(TABLE_HEADER, table_rows(summary)),
        "",
        "Kendall tau and Spearman rho: each proxy seed against the mean reference over the "
        "seeds, averaged over the proxy's seeds; the first row is the reference itself, each "
        "seed against the mean of the others (with two seeds, the seed-to-seed tau): the noise "
        "ceiling. Seed-to-seed tau: two seeds of the same score against each other. Seed sd / "
        "arch sd: the scores' spread over seeds over the spread between the architectures' "
        f"means. `*` best Kendall tau; `$` cheapest setting whose tau is within {CLOSE_TO_BEST} "
        "of the best. Compute: training 3 x 2 x MACs x steps x batch plus sampling "
        "2 x MACs x N x S, summed over the architectures, one seed.",
        *means_line(summary),
        f"Measured wall time: proxy runs {summary['wall']['proxy_s']:.0f} s, reference runs "
        f"{summary['wall']['reference_s']:.0f} s.",
    ]
    (run_dir / SUMMARY_MD).write_text("\n".join(lines) + "\n")
    scatter_plot(summary, run_dir / SCATTER_FILE)


def scatter_plot(summary: dict[str, Any], path: Path) -> None:
    """One panel per proxy setting: the mean proxy value against the mean reference value, one
    point per architecture, its bars spanning the seeds' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["settings"]
    cols = min(3, len(rows))
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    ceiling = Estimate.model_validate(summary["ceiling"]["agreement"]["kendall_tau"]).text()
    for ax, row in zip(axes.flat, rows):
        points = row["points"]
        x = np.array([p["proxy"] for p in points])
        y = np.array([p["reference"] for p in points])
        xerr = _range(x, [p["proxy_seeds"] for p in points])
        yerr = _range(y, [p["reference_seeds"] for p in points])
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=3, lw=0.7, capsize=1.5)
        for p in points:
            ax.annotate(str(p["index"]), (p["proxy"], p["reference"]), fontsize=7)
        a = row["agreement"]
        tau = Estimate.model_validate(a["kendall_tau"]).text()
        repeat = Estimate.model_validate(a["seed_tau"]).text()
        ax.set_title(
            plot_text(f"{row['label']}\ntau {tau} (ceiling {ceiling}); seed-to-seed {repeat}"),
            fontsize=7,
        )
        ax.set_xlabel("proxy (mean over seeds; bars: their range)", fontsize=7)
        ax.set_ylabel(plot_text(f"{summary['reference_label']} (mean)"), fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _range(means: np.ndarray, seeds: list[list[float]]) -> np.ndarray | None:
    """Error bars from each mean down to its lowest seed and up to its highest."""
    if not seeds or len(seeds[0]) < 2:
        return None
    low = means - np.array([min(s) for s in seeds])
    high = np.array([max(s) for s in seeds]) - means
    return np.vstack([low, high])


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The summary as a terminal table (what `summary.md` holds), with the best settings."""
    table = RichTable(
        *TABLE_HEADER,
        title=escape(  # "FID[classifier]" is text, not markup
            f"Proxy settings against {summary['reference_label']} "
            f"({summary['finished']} of {summary['archs']} architectures, "
            f"{len(summary['seeds'])} seed(s))"
        ),
    )
    for row in table_rows(summary):
        table.add_row(*map(escape, row))
    console.print(table)
    for line in means_line(summary):
        console.print(escape(line))
    labels = {r["setting"]: r["label"] for r in summary["settings"]}
    if summary["best"]:
        console.print(f"* best Kendall tau: {escape(labels[summary['best']])}")
        cheapest = labels[summary["cheapest_close_to_best"]]
        console.print(f"$ cheapest within {CLOSE_TO_BEST} of it: {escape(cheapest)}")
