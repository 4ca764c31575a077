"""`diffnas cost`: parameters, MACs and FLOPs of one forward pass, the budget verdict, and with
`--latency` the measured time of one forward pass and of sampling (`diffnas.train.latency`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.table import Table

from diffnas.console import output_console
from diffnas.errors import UserError, first_field
from diffnas.layout import LATENCY_CACHE
from diffnas.runs import given_options
from diffnas.space.references import REFERENCE_ARCHS, resolve_arch
from diffnas.space.search_space import load_space

if TYPE_CHECKING:  # torch and the layers on it load in the command (cli/__init__.py)
    from diffnas.train.latency import LatencyMeter

console = output_console()


def _meter(
    device: str,
    batch: int,
    dtype: str,
    runs: int,
    warmup: int,
    threads: int | None,
    channels_last: bool | None,
    compile_: bool,
    cache_dir: Path | None,
) -> LatencyMeter:
    """The measurement settings checked and resolved on this machine, before anything runs."""
    from diffnas.train.device import check_device, resolve_device
    from diffnas.train.latency import LatencyMeter, LatencyOptions
    from diffnas.train.recipe import resolve_recipe

    try:
        options = LatencyOptions(
            device=device, dtype=dtype, batch=batch, runs=runs, warmup=warmup, threads=threads,
            channels_last=channels_last, compile=compile_,
        )  # fmt: skip
    except ValidationError as err:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc']))} {e.get('input')!r}: {e['msg']}" for e in err.errors()
        )
        raise UserError(f"invalid latency option: {problems}", field=first_field(err, "")) from None
    device_type = resolve_device(check_device(options.device)).type
    # the layout the proxy recipe trains in on that device, which the sampler then runs
    recipe, _ = resolve_recipe("proxy", "ddpm", {}, data_kind="", device_type=device_type)
    return LatencyMeter(options.resolve(recipe=recipe), cache_dir)


def cost(
    ctx: typer.Context,
    archs: list[str] = typer.Argument(
        None,
        help="Reference presets (ddpm-cifar10, iddpm-cifar10, tiny-digits) or JSON/YAML files; none = all references.",
    ),
    space: str | None = typer.Option(
        None, "--space", help="Check membership and budget against this space."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    latency: bool = typer.Option(
        False,
        "--latency",
        help="Also measure one forward pass on a device, as the search's sampler runs it "
        "(eval, no grad, its dtype and memory layout): warm-up, then the median of --runs.",
    ),
    device: str = typer.Option("auto", help="--latency: auto | cpu | cuda | cuda:N."),
    batch: int = typer.Option(1, min=1, max=65536, help="--latency: images per forward pass."),
    dtype: str = typer.Option(
        "auto",
        help="--latency: auto (bf16 autocast on CUDA, fp32 on CPU, as the sampler) | "
        "fp32 | bf16 | fp16.",
    ),  # fmt: skip
    runs: int = typer.Option(
        10, min=1, max=10000, help="--latency: timed passes; the median is shown."
    ),
    warmup: int = typer.Option(3, min=0, max=1000, help="--latency: untimed passes before timing."),
    sampler_steps: int = typer.Option(
        50,
        min=1,
        max=100_000,
        help="--latency: sampler steps S of the sampling time shown (S passes).",
    ),
    threads: int | None = typer.Option(
        None, min=1, max=1024, help="--latency on CPU: torch threads (default: torch's count here)."
    ),
    channels_last: bool | None = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="--latency: weights in channels-last layout (default: on for CUDA, off on CPU, "
        "as the proxy recipe trains).",
    ),
    compile_: bool = typer.Option(
        False, "--compile", help="--latency: torch.compile the model (the sampler does not)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help=f"--latency: cache of measurements (default {LATENCY_CACHE})."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="--latency: measure again."),
) -> None:
    """Count parameters, MACs and FLOPs (= 2 x MACs) of one forward pass of one image; with
    --latency, also time it on a device."""
    if not latency:
        stray = given_options(ctx, ignore={"archs", "space", "as_json", "latency"})
        if stray:
            raise UserError(f"{', '.join(stray)} only apply with --latency; add --latency")
    names = archs or list(REFERENCE_ARCHS)
    s = load_space(space) if space else None
    resolved = [resolve_arch(name, s) for name in names]  # every file read before any timing
    from diffnas.model.cost import budget_verdict, measure_cost  # torch: after the checks

    meter = None
    if latency:
        folder = None if no_cache else (cache_dir or LATENCY_CACHE)
        meter = _meter(device, batch, dtype, runs, warmup, threads, channels_last, compile_, folder)
    rows = []
    for label, arch in resolved:
        c = measure_cost(arch)
        row = {"name": label, "hash": arch.arch_hash(), **c.as_dict()}
        if s is not None:
            ok, verdict = budget_verdict(c, s.budget)
            row.update(space=s.name, within_budget=ok, verdict=verdict)
        if meter is not None:
            hits = meter.hits
            measured = meter.latency(arch)
            row["latency"] = {
                "ms": round(measured.ms, 4),
                "sampler_steps": sampler_steps,
                "sampling_s": round(measured.sampling_s(sampler_steps), 4),
                "cached": meter.hits > hits,
                "device_name": measured.device_name,
                "settings": measured.settings.model_dump(),
                "runs_ms": measured.runs_ms,
                "torch": measured.torch,
            }
        rows.append((arch, row))
    if as_json:
        out = [r for _, r in rows]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return
    title = "Cost of one forward pass per image (FLOPs = 2 x MACs)"
    timed = ["ms/pass", f"{sampler_steps} steps"] if meter else []
    table = Table(
        "architecture",
        "params",
        "GMACs",
        "GFLOPs",
        "at",
        *timed,
        *(["budget"] if s else []),
        title=title,
        min_width=len(title),  # a narrow table would wrap its own title onto two lines
    )
    for arch, r in rows:
        lat = r.get("latency")
        table.add_row(
            r["name"],
            f"{r['params_m']:.1f} M",
            f"{r['gmacs']:.3g}",
            f"{r['gflops']:.3g}",
            f"{arch.image_size}x{arch.image_size}",
            *([f"{lat['ms']:.3g}", f"{lat['sampling_s']:.3g} s"] if lat else []),
            *([r["verdict"]] if s else []),
        )
    console.print(table)
    if meter is not None:
        where = "not cached" if meter.cache_dir is None else f"cache {meter.cache_dir}"
        console.print(
            f"latency: median of {meter.settings.runs} passes after {meter.settings.warmup} "
            f"warm-up, {meter.settings.conditions()} on {meter.device_name}; sampling = "
            f"{sampler_steps} passes; {meter.hits} cached, {meter.misses} measured ({where})",
            highlight=False,
        )
