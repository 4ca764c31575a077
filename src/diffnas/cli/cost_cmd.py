"""`diffnas cost`: parameters, MACs and FLOPs of one forward pass, and the budget verdict."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from diffnas.console import output_console
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.references import REFERENCE_ARCHS, resolve_arch
from diffnas.space.search_space import load_space

console = output_console()


def cost(
    archs: list[str] = typer.Argument(
        None,
        help="Reference presets (ddpm-cifar10, iddpm-cifar10, tiny-digits) or JSON/YAML files; none = all references.",
    ),
    space: str | None = typer.Option(
        None, "--space", help="Check membership and budget against this space."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Count parameters, MACs and FLOPs (= 2 x MACs) of one forward pass of one image."""
    names = archs or list(REFERENCE_ARCHS)
    s = load_space(space) if space else None
    rows = []
    for name in names:
        label, arch = resolve_arch(name, s)
        c = measure_cost(arch)
        row = {"name": label, "hash": arch.arch_hash(), **c.as_dict()}
        if s is not None:
            ok, verdict = budget_verdict(c, s.budget)
            row.update(space=s.name, within_budget=ok, verdict=verdict)
        rows.append((arch, row))
    if as_json:
        out = [r for _, r in rows]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return
    title = "Cost of one forward pass per image (FLOPs = 2 x MACs)"
    table = Table(
        "architecture",
        "params",
        "GMACs",
        "GFLOPs",
        "at",
        *(["budget"] if s else []),
        title=title,
        min_width=len(title),  # a narrow table would wrap its own title onto two lines
    )
    for arch, r in rows:
        table.add_row(
            r["name"],
            f"{r['params_m']:.1f} M",
            f"{r['gmacs']:.3g}",
            f"{r['gflops']:.3g}",
            f"{arch.image_size}x{arch.image_size}",
            *([r["verdict"]] if s else []),
        )
    console.print(table)
