"""CPU bf16 autocast keeps attention in fp32 (faster there), with gradients intact."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffnas.model.builder import build_unet
from diffnas.space.arch import parse_arch
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.precision import FP32AttentionOnCPU
from diffnas.train.recipe import TrainRecipe
from diffnas.train.trainer import TrainStep


def test_attention_runs_in_fp32_under_cpu_autocast() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 8, requires_grad=True) for _ in range(3))
    mode = FP32AttentionOnCPU()
    for _ in range(2):  # the mode is re-entered every training step
        with torch.autocast("cpu", dtype=torch.bfloat16), mode:
            out = F.scaled_dot_product_attention(q, k, v)
        assert out.dtype == torch.bfloat16  # what the rest of the autocast graph expects
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v).to(torch.bfloat16))
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all()
    with mode:  # outside autocast, fp32 attention is left as it is
        assert F.scaled_dot_product_attention(q, k, v).dtype == torch.float32


def test_bf16_cpu_training_step_uses_it_and_trains() -> None:
    arch = parse_arch({"image_size": 8, "in_channels": 1, "base_channels": 8, "channel_mult": [1, 2],
                       "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 8,
                       "norm_groups": 8})  # fmt: skip
    recipe = TrainRecipe.proxy(
        steps=3, batch_size=4, warmup_steps=0, bf16_cpu=True, channels_last=False
    )
    step = TrainStep(build_unet(arch), torch.rand(8, 1, 8, 8) * 2 - 1, recipe=recipe,
                     diffusion=DiffusionConfig.ddpm(), seed=0, device="cpu")  # fmt: skip
    assert isinstance(step.attention_precision, FP32AttentionOnCPU)
    losses = [float(step(i)[0]) for i in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
