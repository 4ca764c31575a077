"""`diffnas report RUN_DIR [RUN_DIR ...]`: an HTML page and a Markdown summary of searches."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Search run folders; several are compared side by side (e.g. one per proposer)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: RUN_DIR/report; ./report for several runs)."
    ),
    proxy_check: Path | None = typer.Option(
        None,
        "--proxy-check",
        help="A proxy study to plot with Kendall's tau: a `diffnas proxy-check` run folder (its best "
        "setting), or a JSON file of (proxy, reference) pairs.",
    ),
) -> None:
    """Write a self-contained HTML report (plots, trials, samples, LLM ledger) and a Markdown summary."""
    from diffnas.report.page import write_report  # torch, matplotlib (cli/__init__.py)

    files = write_report(run_dirs, out, proxy_check)
    print(f"report of {files.trials} trials: {files.html}")
    print(f"summary: {files.markdown} (plots in {files.markdown.parent / 'plots'})")
    for line in files.trust:
        print(line)
