"""`diffnas export RUN_DIR --trial N --out DIR`: a trial as a diffusers DDPMPipeline folder."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., help="A search run folder."),
    trial: int = typer.Option(..., "--trial", min=0, help="The trial number to export."),
    out: Path = typer.Option(..., "--out", help="A new folder for the pipeline."),
    stage: str = typer.Option(
        "auto",
        "--stage",
        help="Weights of: auto (final when promoted, else proxy) | proxy | final.",
    ),
) -> None:
    """Export a trial's EMA weights and scheduler as a diffusers pipeline, with its records."""
    from diffnas.report.export import export_trial  # torch, matplotlib (cli/__init__.py)

    done = export_trial(run_dir, trial, out, stage)  # type: ignore[arg-type]
    print(
        f"exported trial {done.trial} ({done.stage} weights, {done.params / 1e6:.3f} M params) to "
        f"{done.out}\nload it with: DDPMPipeline.from_pretrained({str(done.out)!r})"
    )
