"""The run folders of `diffnas sample` and `diffnas score`: their options, the score record,
and the score run's work (sample, or reuse the saved samples, then score).

Here rather than in the command module so that `diffnas` imports its commands without torch
(cli/__init__.py): these records name the data, the scoring protocol and the score.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from diffnas import limits as L
from diffnas.data.datasets import DataSpec, ImageData
from diffnas.evaluate.score import Score
from diffnas.execute.job import ScoreSpec, score_samples
from diffnas.runs import temp_beside
from diffnas.train.checkpoint import Trained
from diffnas.train.device import resolve_device
from diffnas.train.sampling import sample_images, save_grid

SAMPLES = "samples.npz"  # the generated uint8 images of a score run, reused on --resume
SCORE_FILE = "score.json"


class ScoreRecord(BaseModel):
    """`score.json` of a score run folder, as `score --resume` reads it back."""

    model_config = ConfigDict(extra="allow")

    score: Score
    run_dir: str
    wall_s: float = Field(ge=0)


class SampleOptions(BaseModel):
    """A sampling run; written as its options.json."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="ema.pt the images come from")
    num: int = Field(ge=1, le=L.MAX_SAMPLES, description="images to draw")
    sampler: str = Field(description="ddim | ddpm | respaced")
    steps: int | None = Field(
        ge=1, le=L.MAX_SAMPLER_STEPS, description="sampler steps (ddpm: all T)"
    )
    seed: int = Field(ge=0, le=L.MAX_SEED, description="seed of the initial noise")
    batch_size: int = Field(ge=1, le=L.MAX_BATCH_SIZE, description="images per sampling batch")
    device: str = Field(description="auto | cpu | cuda[:N]")


class ScoreOptions(BaseModel):
    """A scoring run; written as its options.json."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="ema.pt the images come from")
    data: DataSpec = Field(description="reference images")
    score: ScoreSpec = Field(description="metric, extractor, N, sampler and steps")
    seed: int = Field(ge=0, le=L.MAX_SEED, description="seed of the initial noise")
    device: str = Field(description="auto | cpu | cuda[:N]")
    cache_dir: str = Field(description="reference statistics and classifier weights")


def sample_and_score(
    trained: Trained, data: ImageData, opts: ScoreOptions, run_dir: Path
) -> dict[str, Any]:
    """Sample (or reuse the saved samples), then extractor → reference statistics → score."""
    spec, device = opts.score, resolve_device(opts.device)
    start = time.perf_counter()
    samples_path = run_dir / SAMPLES
    generated = None
    if samples_path.is_file():
        with np.load(samples_path) as f:
            if len(f["images"]) == spec.num_samples:
                generated = torch.from_numpy(f["images"])
    if generated is None:
        generated = sample_images(
            trained.model, trained.diffusion, spec.num_samples, sampler=spec.sampler,
            steps=spec.steps, seed=opts.seed, batch_size=spec.batch_size, device=device,
        )  # fmt: skip
        tmp = temp_beside(samples_path).with_suffix(".npz")  # np.savez adds .npz otherwise
        np.savez(tmp, images=generated.numpy())
        tmp.replace(samples_path)
        save_grid(generated[:64], run_dir / "samples.png")
    sample_s = time.perf_counter() - start
    result = score_samples(generated, data, opts.data.split, spec, Path(opts.cache_dir), device)
    return {
        "score": result.model_dump(mode="json"),
        "diffusion": trained.diffusion.model_dump(mode="json"),  # incl. the sampler's variance
        "checkpoint": opts.checkpoint,
        "run_dir": str(run_dir),
        "sample_s": round(sample_s, 3),
        "wall_s": round(time.perf_counter() - start, 3),
    }
