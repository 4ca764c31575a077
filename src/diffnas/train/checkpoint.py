"""Checkpoint files of a train run folder: writing them atomically, reading them back, and
rebuilding the trained EMA denoiser from `ema.pt` alone (what `diffnas sample`/`score` use)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import UNet2DModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.model.builder import build_unet
from diffnas.model.cost import measure_cost
from diffnas.runs import read_file, temp_beside
from diffnas.space.arch import ArchConfig
from diffnas.train.diffusion import DiffusionConfig

CHECKPOINT = "checkpoint.pt"
EMA_CHECKPOINT = "ema.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a kill never leaves half a checkpoint."""
    tmp = temp_beside(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


class TrainStatus(BaseModel):
    """`status.json` of a training run folder, as `train --resume` and reports read it back."""

    model_config = ConfigDict(extra="allow")

    status: Literal["running", "complete", "paused", "diverged", "oom", "failed"]
    step: int = Field(ge=0)
    steps: int | None = Field(None, ge=1)
    last_loss: float | None = None
    images_per_sec: float | None = None
    checkpoint: str | None = None
    ema_checkpoint: str | None = None
    error: str | None = None


def read_status(path: Path) -> TrainStatus:
    """A training run's `status.json`, checked (`diffnas.runs.read_file`)."""
    fix = "delete it to resume from the last checkpoint"
    return read_file(path, TrainStatus, "training status", fix=fix)


def _torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a `checkpoint.pt` or `ema.pt` (on CPU, tensors and plain data only); a file that is
    not one (truncated, overwritten, not ours) is a `UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint={str(path)!r} does not exist", field="checkpoint")
    try:
        state = _torch_load(path)
    except Exception as err:  # torch's unpickler fails on damage with almost any error
        raise UserError(
            f"checkpoint {str(path)!r} cannot be loaded, it is damaged ({type(err).__name__}: "
            f"{_first_sentence(err)}); delete it to train that run from its start, or restore it",
            field="checkpoint",
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a diffnas checkpoint",
            field="checkpoint",
        )
    return state


def restore_ema(model: torch.nn.Module, checkpoint: dict[str, Any] | str | Path) -> torch.nn.Module:
    """Copy the EMA weights of a checkpoint (dict or path) into `model`; returns `model`."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["ema_model"])
    return model


def checkpoint_metadata(
    arch: ArchConfig, objective: str, data: DataSpec, **labels: str | None
) -> dict[str, Any]:
    """What ema.pt carries so `load_trained` (and `diffnas sample`, `score`, `export`) can rebuild
    the model and find its data: the architecture, the objective, the data spec and any labels
    given (`arch_name`, `recipe_preset`). `diffnas train` and a
    search's evaluation both write it through here."""
    return {
        "arch": arch.model_dump(mode="json"),
        "objective": objective,
        "data": data.model_dump(mode="json"),
        **{k: v for k, v in labels.items() if v is not None},
    }


@dataclass
class Trained:
    """A trained denoiser rebuilt from its EMA checkpoint."""

    model: UNet2DModel
    diffusion: DiffusionConfig
    metadata: dict[str, Any]
    path: Path
    label: str
    arch: ArchConfig | None

    def forward_flops(self) -> int | None:
        return measure_cost(self.arch).flops if self.arch is not None else None


def load_trained(ckpt: str | Path) -> Trained:
    """A train run folder (its ema.pt) or a checkpoint file → the EMA model and its settings."""
    path = Path(ckpt)
    if path.is_dir():
        path = path / EMA_CHECKPOINT
    if not path.is_file():
        raise UserError(f"checkpoint {str(ckpt)!r}: no such file ({path})", field="checkpoint")
    not_ours = (
        f"checkpoint {str(path)!r} is not a diffnas checkpoint; give a train run folder or "
        "its ema.pt (to train an architecture file, use diffnas train)"
    )
    try:
        state = _torch_load(path)
    except Exception as err:
        # torch.load on a truncated zip, a text file (an architecture JSON) or random bytes:
        # its unpickler fails on random bytes with almost any error (KeyError, IndexError, ...)
        reason = _first_sentence(err)
        raise UserError(
            f"{not_ours} ({type(err).__name__}: {reason})", field="checkpoint"
        ) from None
    if not isinstance(state, dict) or "ema_model" not in state or "diffusion" not in state:
        raise UserError(not_ours, field="checkpoint")
    metadata = state.get("metadata") or {}
    try:
        arch = ArchConfig.model_validate(metadata["arch"]) if "arch" in metadata else None
        # Without metadata (a checkpoint from the Python API) the diffusers config rebuilds it.
        model = (
            build_unet(arch) if arch is not None else UNet2DModel.from_config(state["model_config"])
        )
        restore_ema(model, state)
        diffusion = DiffusionConfig.model_validate(state["diffusion"])
    except (ValidationError, KeyError, RuntimeError) as err:
        # recorded settings that do not validate, or weights that do not fit the architecture
        reason = _first_sentence(err)
        raise UserError(
            f"checkpoint {str(path)!r} is damaged: its weights or settings do not match its "
            f"recorded architecture ({type(err).__name__}: {reason})",
            field="checkpoint",
        ) from None
    label = metadata.get("arch_name") or path.parent.name
    label = label.removesuffix(Path(label).suffix)
    return Trained(model, diffusion, metadata, path.resolve(), label, arch)


def _first_sentence(err: Exception) -> str:
    """The gist of a library's error (torch's run to a page of advice)."""
    text = " ".join(str(err).split())
    return text.split(". ")[0][:160]
