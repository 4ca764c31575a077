"""Checkpoint files of a train run folder: writing them atomically, reading them back, and
rebuilding the trained EMA denoiser from `ema.pt` alone (what `diffnas sample`/`score` use)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from pydantic import ValidationError

from diffnas.errors import UserError
from diffnas.model.builder import build_unet
from diffnas.model.cost import measure_cost
from diffnas.space.arch import ArchConfig
from diffnas.train.diffusion import DiffusionConfig

CHECKPOINT = "checkpoint.pt"
EMA_CHECKPOINT = "ema.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a `checkpoint.pt` or `ema.pt` (on CPU, tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint={str(path)!r} does not exist", field="checkpoint")
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_ema(model: torch.nn.Module, checkpoint: dict[str, Any] | str | Path) -> torch.nn.Module:
    """Copy the EMA weights of a checkpoint (dict or path) into `model`; returns `model`."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["ema_model"])
    return model


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
        state = load_checkpoint(path)
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
