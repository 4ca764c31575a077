"""`diffnas cost`: parameters, MACs and FLOPs of one forward pass, and the budget verdict."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from diffnas.errors import UserError
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.arch import ArchConfig, parse_arch, read_arch_file
from diffnas.space.references import REFERENCE_ARCHS, get_reference
from diffnas.space.search_space import SearchSpace, load_space

console = Console()


def resolve_arch(text: str, space: SearchSpace | None = None) -> tuple[str, ArchConfig]:
    """A reference preset name or a JSON/YAML architecture file.

    With a space, a file may leave out the fields the space fixes (image size, channels,
    learned variance), and the architecture must lie inside the space.
    """
    if text in REFERENCE_ARCHS:
        arch = REFERENCE_ARCHS[text]
        if space is not None:
            space.check(arch, source=f"architecture {text}")
        return text, arch
    path = Path(text)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        source = f"architecture in {path.name}"
        raw = read_arch_file(path)
        return path.name, (space.complete(raw, source) if space else parse_arch(raw, source))
    get_reference(text)  # raises with the list of known presets
    raise UserError(f"Unknown architecture {text!r}.")  # pragma: no cover


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
    table = Table(
        "architecture",
        "params",
        "GMACs",
        "GFLOPs",
        "at",
        *(["budget"] if s else []),
        title="Cost of one forward pass per image (FLOPs = 2 x MACs)",
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
