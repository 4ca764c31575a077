"""TensorBoard is optional: with `tensorboard=true` the logged metrics also land in RUN_DIR/tb."""

from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffnas.model.builder import build_unet
from diffnas.space.arch import parse_arch
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.recipe import TrainRecipe
from diffnas.train.trainer import train


def test_tensorboard_scalars_match_metrics(tmp_path) -> None:
    torch.manual_seed(0)
    arch = parse_arch({"image_size": 8, "in_channels": 1, "base_channels": 8, "channel_mult": [1, 2],
                       "num_res_blocks": 1, "mid_attention": False, "norm_groups": 8})  # fmt: skip
    recipe = TrainRecipe.proxy(steps=4, batch_size=4, warmup_steps=0, log_every=2, tensorboard=True)
    result = train(build_unet(arch), torch.rand(16, 1, 8, 8) * 2 - 1, recipe=recipe,
                   diffusion=DiffusionConfig.ddpm(), run_dir=tmp_path, seed=0, progress=False)  # fmt: skip
    assert result.status == "complete"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4]
    assert abs(losses[-1].value - result.last_loss) < 1e-5
