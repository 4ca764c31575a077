"""What `diffnas proxy-check` concludes and writes: per proxy setting, the agreement with the
reference ranking (Kendall tau, Spearman rho with bootstrap intervals, top-k overlap) and the
compute of both sides; `summary.json`, `summary.md` and `scatter.png` in the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffnas.execute.job import ScoreSpec
from diffnas.experiments.compute import sampling_flops, training_flops
from diffnas.experiments.ranking import Agreement, Estimate, agreement
from diffnas.report.markdown import markdown_table
from diffnas.report.plots import text
from diffnas.runs import write_json
from diffnas.space.search_space import SearchSpace
from diffnas.train.diffusion import DiffusionConfig

if TYPE_CHECKING:  # proxy_check imports this module
    from diffnas.experiments.proxy_check import ArchEntry, ProxyCheckConfig, ProxySetting

SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"
SCATTER_FILE = "scatter.png"
SAMPLED = ("rfid", "kid")  # the metrics that sample the checkpoint


def _sampler_steps(score: ScoreSpec, space: SearchSpace) -> int:
    """Denoiser calls per image: S, or every step of the schedule for ancestral DDPM."""
    if score.sampler == "ddpm" or score.steps is None:
        return DiffusionConfig.resolve(space.objective, space.learn_sigma).timesteps
    return score.steps


def setting_flops(
    config: ProxyCheckConfig, space: SearchSpace, setting: ProxySetting, macs: int
) -> float:
    """What a search pays per candidate to rank it by `setting`: the proxy run and its sampling."""
    batch = config.proxy.train_recipe(space.objective).batch_size
    flops = training_flops(macs, setting.steps, batch)
    if setting.metric in SAMPLED:
        score = setting.score_spec(config.proxy.score)
        flops += sampling_flops(macs, score.num_samples, _sampler_steps(score, space))
    return flops


def reference_flops(config: ProxyCheckConfig, space: SearchSpace, macs: int) -> float:
    recipe = config.reference.train_recipe(space.objective)
    score = config.reference.score
    return training_flops(macs, recipe.steps, recipe.batch_size) + sampling_flops(
        macs, score.num_samples, _sampler_steps(score, space)
    )


def summarise(
    config: ProxyCheckConfig,
    space: SearchSpace,
    archs: list[ArchEntry],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Per proxy setting: agreement with the reference and the compute of both sides."""
    macs = {a.index: a.macs for a in archs}
    reference = {
        r["index"]: r["reference"]["value"]
        for r in results
        if r["reference"]["status"] == "complete" and r["reference"]["value"] is not None
    }
    rows = []
    for setting in config.settings():
        pairs = [
            (r["index"], r["values"].get(setting.key), reference[r["index"]])
            for r in results
            if r["index"] in reference and r["values"].get(setting.key) is not None
        ]
        stats: Agreement = agreement(
            [p for _, p, _ in pairs], [q for _, _, q in pairs], top_k=config.top_k,
            resamples=config.bootstrap, seed=config.seed,
        )  # fmt: skip
        proxy_cost = sum(setting_flops(config, space, setting, macs[i]) for i, _, _ in pairs)
        reference_cost = sum(reference_flops(config, space, macs[i]) for i, _, _ in pairs)
        rows.append(
            {
                "setting": setting.key,
                "label": setting.label(config.proxy.score.extractor),
                **setting.model_dump(),
                "agreement": stats.model_dump(),
                "proxy_tflops": proxy_cost / 1e12,
                "reference_tflops": reference_cost / 1e12,
                "compute_ratio": reference_cost / proxy_cost if proxy_cost else None,
                "points": [{"index": i, "proxy": p, "reference": q} for i, p, q in pairs],
            }
        )
    wall = {
        "proxy_s": sum(
            run["wall_s"] + run.get("rescore_wall_s", 0.0)
            for r in results
            for run in r["proxy_runs"].values()
        ),
        "reference_s": sum(r["reference"]["wall_s"] for r in results),
    }
    return {
        "archs": len(archs),
        "finished": len(results),
        "reference_label": config.reference.score.label,
        "settings": rows,
        "best": _best(rows),
        "cheapest_close_to_best": _cheapest_close(rows),
        "wall": wall,
    }


def _tau(row: dict[str, Any]) -> float | None:
    return row["agreement"]["kendall_tau"]["value"]


def _best(rows: list[dict[str, Any]]) -> str | None:
    ranked = [r for r in rows if _tau(r) is not None]
    return max(ranked, key=_tau)["setting"] if ranked else None


CLOSE_TO_BEST = 0.1  # tau within this of the best counts as "ranks as well"


def _cheapest_close(rows: list[dict[str, Any]]) -> str | None:
    """The cheapest setting whose tau is within CLOSE_TO_BEST of the best tau."""
    ranked = [r for r in rows if _tau(r) is not None]
    if not ranked:
        return None
    best = max(_tau(r) for r in ranked)  # type: ignore[type-var]
    close = [r for r in ranked if _tau(r) >= best - CLOSE_TO_BEST]  # type: ignore[operator]
    return min(close, key=lambda r: r["proxy_tflops"])["setting"]


# ----- what it writes -----


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The summary as table cells: setting, n, tau, rho, top-k, proxy TFLOPs, ratio."""
    rows = []
    for r in summary["settings"]:
        a = r["agreement"]
        tau = Estimate.model_validate(a["kendall_tau"]).text()
        rho = Estimate.model_validate(a["spearman_rho"]).text()
        overlap = (
            "-" if a["top_k_overlap"] is None else f"{a['top_k_overlap']:.2f} (k={a['top_k']})"
        )
        ratio = "-" if r["compute_ratio"] is None else f"{r['compute_ratio']:.1f}x"
        marks = "".join(
            m
            for m, key in (("*", summary["best"]), ("$", summary["cheapest_close_to_best"]))
            if r["setting"] == key
        )
        rows.append(
            [r["label"] + (f" {marks}" if marks else ""), str(a["n"]), tau, rho, overlap,
             f"{r['proxy_tflops']:.3g}", ratio]
        )  # fmt: skip
    return rows


TABLE_HEADER = [
    "proxy setting",
    "n",
    "Kendall tau [95% CI]",
    "Spearman rho [95% CI]",
    "top-k overlap",
    "proxy TFLOPs",
    "reference / proxy compute",
]


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / SUMMARY_FILE, summary)
    lines = [
        f"# Proxy check: {summary['finished']} of {summary['archs']} architectures against "
        f"{summary['reference_label']} after the reference recipe",
        "",
        *markdown_table(TABLE_HEADER, table_rows(summary)),
        "",
        "`*` best Kendall tau; `$` cheapest setting whose tau is within "
        f"{CLOSE_TO_BEST} of the best. Compute: training 3 x 2 x MACs x steps x batch plus "
        "sampling 2 x MACs x N x S, summed over the architectures.",
        f"Measured wall time: proxy runs {summary['wall']['proxy_s']:.0f} s, reference runs "
        f"{summary['wall']['reference_s']:.0f} s.",
    ]
    (run_dir / SUMMARY_MD).write_text("\n".join(lines) + "\n")
    scatter_plot(summary, run_dir / SCATTER_FILE)


def scatter_plot(summary: dict[str, Any], path: Path) -> None:
    """One panel per proxy setting: proxy value against reference value, one dot per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["settings"]
    cols = min(3, len(rows))
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        points = row["points"]
        ax.scatter([p["proxy"] for p in points], [p["reference"] for p in points], s=18)
        for p in points:
            ax.annotate(str(p["index"]), (p["proxy"], p["reference"]), fontsize=7)
        tau = Estimate.model_validate(row["agreement"]["kendall_tau"]).text()
        ax.set_title(text(f"{row['label']}\ntau {tau}"), fontsize=8)
        ax.set_xlabel("proxy", fontsize=8)
        ax.set_ylabel(text(summary["reference_label"]), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
