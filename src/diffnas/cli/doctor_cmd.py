"""`diffnas doctor`: one line per part of this install (ok / warn / missing / fail) and its fix."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from diffnas.console import output_console
from diffnas.doctor import run_checks

console = output_console(soft_wrap=True)
STYLES = {"ok": "green", "warn": "yellow", "missing": "yellow", "fail": "red"}


def doctor(
    runs: Path = typer.Option(
        Path("runs"), "--runs", help="Root of the numbered run folders to check."
    ),
    inception_weights: str | None = typer.Option(
        None, "--inception-weights", help="FID Inception weights file to check."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check Python, torch (CPU bf16, AMX), CUDA, the local LLM (in its own process), FID weights, the run folder.

    Exits 1 naming the broken part when a required one (Python, torch, the local LLM, the run
    folder) does not work.
    """
    report = run_checks(runs_dir=runs, inception_weights=inception_weights)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        width = max(len(c.name) for c in report.checks)
        for check in report.checks:
            status = f"[{STYLES[check.status]}]{check.status:<7}[/]"
            console.print(f"{status} {check.name:<{width}}  {escape(check.detail)}")
            if check.fix and check.status != "ok":
                console.print(f"{'':<7} {'':<{width}}  fix: {escape(check.fix)}")
        if report.ok:
            console.print("[green]everything required works[/green]")
        else:
            console.print(f"[red]broken: {', '.join(report.broken)}[/red]")
    if not report.ok:
        raise typer.Exit(1)
