"""`diffnas space show|sample|list`."""

from __future__ import annotations

import json
import random

import typer
from rich.markup import escape
from rich.table import Table

from diffnas.console import output_console
from diffnas.limits import MAX_SEED
from diffnas.space.references import get_reference
from diffnas.space.search_space import list_presets, load_space

app = typer.Typer(help="Inspect search spaces (presets or YAML files).", no_args_is_help=True)
console = output_console()


@app.command("list")
def list_spaces() -> None:
    """List the bundled space presets."""
    for name in list_presets():
        space = load_space(name)
        console.print(f"[bold]{escape(name)}[/bold]  {escape(space.description)}")


@app.command("show")
def show(
    space: str = typer.Argument(..., help="Preset name (see `diffnas space list`) or YAML file."),
    schema: bool = typer.Option(
        False, "--schema", help="Print the JSON schema of a proposal instead."
    ),
) -> None:
    """Describe a space in words (the text an LLM sees) and cost its reference architecture."""
    from diffnas.model.cost import budget_verdict, measure_cost  # torch (cli/__init__.py)

    s = load_space(space)
    if schema:
        print(json.dumps(s.arch_json_schema(), indent=2))
        return
    console.print(s.describe(), markup=False, highlight=False)
    if s.reference:
        ref = get_reference(s.reference)
        _, verdict = budget_verdict(measure_cost(ref), s.budget)
        console.print(
            f"- reference {s.reference}: {ref.summary()}; {verdict}", markup=False, highlight=False
        )


@app.command("sample")
def sample(
    space: str = typer.Argument(..., help="Preset name or YAML file."),
    n: int = typer.Option(
        5, "-n", "--num", min=1, max=1000, help="How many architectures to draw."
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Draw architectures uniformly from a space, with their cost and budget verdict."""
    from diffnas.model.cost import budget_verdict, measure_cost  # torch (cli/__init__.py)

    s = load_space(space)
    rng = random.Random(seed)
    table = Table("#", "hash", "architecture", "params (M)", "GMACs", "budget")
    for i in range(n):
        arch = s.sample(rng)
        cost = measure_cost(arch)
        ok, verdict = budget_verdict(cost, s.budget)
        if as_json:
            print(
                json.dumps(
                    {
                        "arch": arch.model_dump(),
                        "hash": arch.arch_hash(),
                        **cost.as_dict(),
                        "within_budget": ok,
                    }
                )
            )
        else:
            table.add_row(
                str(i),
                arch.arch_hash(),
                arch.summary(),
                f"{cost.params_m:.2f}",
                f"{cost.gmacs:.3f}",
                "[green]ok[/green]" if ok else f"[red]{verdict}[/red]",
            )
    if not as_json:
        console.print(table)
