"""`diffnas export RUN_DIR --trial N --out DIR`: one trained candidate as a diffusers pipeline.

    DIR/model_index.json                          DDPMPipeline: unet + scheduler
    DIR/unet/config.json                          the UNet2DModel config
    DIR/unet/diffusion_pytorch_model.safetensors  the EMA weights
    DIR/scheduler/scheduler_config.json           DDPMScheduler: the trial's β schedule, T,
                                                  variance (learned range when σ is learned)
    DIR/arch.json, recipe.json, diffusion.json    how it was built and trained
    DIR/scores.json                               its scores, each with its protocol
    DIR/README.md                                 what it is and how to load it

so that `DDPMPipeline.from_pretrained(DIR)` loads it and samples with the library people use.
The weights are the EMA weights (what diffnas samples and scores with), from the promoted
final training when the trial has one, otherwise from its proxy training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffusers import DDPMPipeline
from pydantic import ValidationError

from diffnas.errors import UserError
from diffnas.layout import RESULT_FILE, trial_dir
from diffnas.model.builder import build_unet
from diffnas.report.source import (
    SearchRecord,
    TrialRow,
    ema_checkpoint,
    load_search,
    read_result,
)
from diffnas.runs import check_out_dir, staged_dir, write_json
from diffnas.space.arch import ArchConfig
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.sampling import make_scheduler
from diffnas.train.trainer import load_checkpoint, restore_ema

Stage = Literal["auto", "proxy", "final"]
STAGES = ("auto", "proxy", "final")


@dataclass
class Export:
    out: Path
    trial: int
    stage: str  # "proxy" or "final": whose weights were exported
    checkpoint: Path
    params: int
    diffusion: DiffusionConfig


def _pick_stage(record: SearchRecord, row: TrialRow, stage: Stage) -> str:
    if stage not in STAGES:
        raise UserError(
            f"--stage {stage!r} is unknown; allowed: {', '.join(STAGES)}", field="stage"
        )
    final = ema_checkpoint(record.run_dir, row.number, "final")
    if stage == "auto":
        return "final" if row.final is not None and final.is_file() else "proxy"
    return stage


def _check_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {str(out)!r} exists and is not an empty folder; give a new folder",
            field="out",
        )
    check_out_dir(out)  # a file there or above it, a place nothing can be created in


def export_trial(run_dir: str | Path, trial: int, out: str | Path, stage: Stage = "auto") -> Export:
    """Write trial `trial` of the search in `run_dir` as a diffusers DDPMPipeline folder `out`:
    filled under a temporary name next to it and renamed when complete."""
    out = Path(out)
    _check_out(out)
    record = load_search(run_dir)
    row = record.trial(trial)
    chosen = _pick_stage(record, row, stage)
    checkpoint = ema_checkpoint(record.run_dir, row.number, chosen)
    if not checkpoint.is_file():
        why = f"status {row.status}" + (f": {row.reason}" if row.reason else "")
        raise UserError(
            f"--trial {trial}: no {chosen} training weights ({checkpoint} is missing; {why})",
            field="trial",
        )
    state = load_checkpoint(checkpoint)
    try:
        arch = ArchConfig.model_validate(state["metadata"]["arch"])
        diffusion = DiffusionConfig.model_validate(state["diffusion"])
    except (KeyError, ValidationError) as err:
        raise UserError(
            f"checkpoint {str(checkpoint)!r} lacks a valid architecture or diffusion config "
            f"({type(err).__name__}); the trial's files are damaged",
            field="trial",
        ) from None
    unet = restore_ema(build_unet(arch), state).eval()
    # The scheduler the trial trained with; DDPMPipeline samples with it (ancestral steps,
    # respaced by diffusers when num_inference_steps < T).
    scheduler = make_scheduler(diffusion, "ddpm", None)
    scores = _scores(record, row, chosen)
    params = sum(p.numel() for p in unet.parameters())
    with staged_dir(out) as folder:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(
            folder, safe_serialization=True
        )
        write_json(folder / "arch.json", arch.model_dump(mode="json"))
        write_json(folder / "recipe.json", state.get("recipe", {}))
        write_json(folder / "diffusion.json", diffusion.model_dump(mode="json"))
        write_json(folder / "scores.json", scores)
        card = _model_card(record, row, chosen, arch, diffusion, params)
        (folder / "README.md").write_text(card)
    return Export(out, row.number, chosen, checkpoint, params, diffusion)


def _scores(record: SearchRecord, row: TrialRow, stage: str) -> dict:
    """Every score of the trial with its protocol, and where it came from."""
    results = {}
    for name in ("proxy", "final"):
        result = read_result(trial_dir(record.run_dir, row.number, name) / RESULT_FILE)
        if result is not None:
            kept = {"status", "score", "scores", "train", "wall_s"}
            results[name] = result.model_dump(mode="json", include=kept)
    return {
        "search": record.name,
        "trial": row.number,
        "weights_from": stage,
        "proxy_label": row.proxy.label if row.proxy else record.proxy_label,
        "final_label": row.final.label if row.final else record.final_label,
        "gmacs": row.gmacs,
        "params_m": row.params_m,
        "rationale": row.rationale,
        "results": results,
    }


def _ddim_lines(diffusion: DiffusionConfig) -> list[str]:
    """How to sample as diffnas's DDIM scores did (the scores' `ddim-S` protocol)."""
    if diffusion.learn_sigma:
        return [
            "diffnas scored it with DDIM; diffusers' DDIMPipeline does not split the learned "
            "variance channels off the output, so use `diffnas sample --sampler ddim` for "
            "those samples (or DDPMPipeline above).",
            "",
        ]
    return [
        "diffnas scored it with DDIM (eta = 0, x0 clipped to [-1, 1] and epsilon re-derived "
        "from the clipped x0, as IDDPM's `ddim_sample`). diffusers' DDIMPipeline does the "
        "same only with `use_clipped_model_output=True`; without it the update uses the "
        "unclipped epsilon and the images differ:",
        "",
        "```python",
        "from diffusers import DDIMPipeline",
        "",
        'pipe = DDIMPipeline.from_pretrained("THIS_FOLDER")',
        "images = pipe(batch_size=16, num_inference_steps=50, eta=0.0,",
        "              use_clipped_model_output=True).images",
        "```",
        "",
    ]


def _model_card(
    record: SearchRecord,
    row: TrialRow,
    stage: str,
    arch: ArchConfig,
    diffusion: DiffusionConfig,
    params: int,
) -> str:
    scores = [f"- proxy: {row.proxy.value:.4g} {row.proxy.label}"] if row.proxy else []
    if row.final is not None:
        scores.append(f"- final: {row.final.value:.4g} {row.final.label}")
    size = arch.image_size
    return "\n".join(
        [
            f"# {record.name}, trial {row.number}",
            "",
            f"A DDPM denoiser found by a diffnas search (proposer {record.proposer}, space "
            f"{record.config.space}); weights: the EMA of its {stage} training.",
            "",
            f"- architecture: `{arch.summary()}`",
            f"- {params / 1e6:.3f} M parameters, {row.gmacs} GMACs per forward pass at {size}x{size}",
            f"- diffusion: {diffusion.objective}, {diffusion.schedule} schedule, T = "
            f"{diffusion.timesteps}, learned sigma: {diffusion.learn_sigma}",
            *scores,
            "",
            "```python",
            "from diffusers import DDPMPipeline",
            "",
            'pipe = DDPMPipeline.from_pretrained("THIS_FOLDER")',
            "images = pipe(batch_size=16, num_inference_steps=1000).images  # PIL images",
            "```",
            "",
            *_ddim_lines(diffusion),
            "arch.json, recipe.json, diffusion.json and scores.json hold the diffnas records.",
            "",
        ]
    )
