"""CPU bf16: native-bf16 detection from /proc/cpuinfo, and autocast with attention in fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cpuinfo_samples
from cpuinfo_samples import use_cpuinfo
from diffnas.model.builder import build_unet
from diffnas.space.arch import parse_arch
from diffnas.train import precision
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.precision import FP32AttentionOnCPU, parse_cpuinfo
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


# --- Native bf16 detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "native", "evidence"),
    [
        (cpuinfo_samples.SAPPHIRE_RAPIDS, True, "avx512_bf16, amx_bf16"),
        (cpuinfo_samples.AMX_ONLY, True, "amx_bf16"),
        (cpuinfo_samples.ZEN4, True, "avx512_bf16"),
        (cpuinfo_samples.CASCADE_LAKE, False, "none of avx512_bf16, amx_bf16"),
        (cpuinfo_samples.GRAVITON3, True, "bf16"),
        (cpuinfo_samples.GRAVITON2, False, "none of bf16"),
        # whole words only: `svebf16` without `bf16` is not the BF16 extension
        (cpuinfo_samples.GRAVITON2.replace(" ssbs", " ssbs svebf16"), False, "none of bf16"),
    ],
    ids=["spr", "amx-only", "zen4", "cascade-lake", "graviton3", "graviton2", "svebf16-only"],
)
def test_native_bf16_is_read_from_cpuinfo(text: str, native: bool, evidence: str) -> None:
    cpu = parse_cpuinfo(text)
    assert cpu is not None and cpu.native_bf16 is native
    assert cpu.evidence.startswith(evidence)


def test_cpuinfo_names_the_model() -> None:
    assert parse_cpuinfo(cpuinfo_samples.ZEN4).model == "AMD EPYC 9654 96-Core Processor"
    assert parse_cpuinfo(cpuinfo_samples.GRAVITON3).model  # arm64 has no "model name": a fallback


def test_cpuinfo_without_flags_defers_to_torch(monkeypatch, tmp_path) -> None:
    assert parse_cpuinfo("processor\t: 0\n") is None
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    for caps, native in [({"avx2": True, "avx512_bf16": False}, False), ({"bf16": True}, True)]:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        monkeypatch.setattr(precision, "_detected", None)
        assert precision.cpu_bf16_support().native_bf16 is native


def test_detection_reads_the_cpuinfo_file_once(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.SAPPHIRE_RAPIDS)
    assert precision.cpu_bf16_support().native_bf16
    (tmp_path / "cpuinfo").write_text(cpuinfo_samples.CASCADE_LAKE)
    assert precision.cpu_bf16_support().native_bf16  # the verdict of this process does not flip


def test_default_recipe_follows_the_cpu(monkeypatch, tmp_path) -> None:
    arch = parse_arch({"image_size": 8, "in_channels": 1, "base_channels": 8, "channel_mult": [1],
                       "num_res_blocks": 1, "attention_resolutions": [], "mid_attention": False,
                       "norm_groups": 8})  # fmt: skip
    recipe = TrainRecipe.proxy(steps=1, batch_size=2, warmup_steps=0, channels_last=False)
    assert recipe.bf16_cpu == "auto"
    for text, native in [(cpuinfo_samples.ZEN4, True), (cpuinfo_samples.CASCADE_LAKE, False)]:
        use_cpuinfo(monkeypatch, tmp_path, text)
        step = TrainStep(build_unet(arch), torch.zeros(2, 1, 8, 8), recipe=recipe,
                         diffusion=DiffusionConfig.ddpm(), seed=0, device="cpu")  # fmt: skip
        assert step.use_bf16 is native
        assert isinstance(step.attention_precision, FP32AttentionOnCPU) is native
