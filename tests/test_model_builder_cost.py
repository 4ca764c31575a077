"""Builder (ArchConfig -> UNet2DModel, config.json round-trip) and the meta-device cost model."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from diffnas.errors import ArchitectureError
from diffnas.model import cost as cost_mod
from diffnas.model.builder import build_unet, unet_kwargs
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.arch import ArchConfig, parse_arch
from diffnas.space.references import get_reference
from diffnas.space.search_space import Budget


def test_ddpm_cifar10_reference_counts() -> None:
    cost = measure_cost(get_reference("ddpm-cifar10"))
    assert round(cost.params / 1e6, 1) == 35.7  # published: 35.7 M
    assert cost.gmacs == pytest.approx(6.22, abs=0.01)
    assert cost.flops == 2 * cost.macs


def test_iddpm_cifar10_reference_counts() -> None:
    cost = measure_cost(get_reference("iddpm-cifar10"))
    assert round(cost.params / 1e6, 1) == 52.5  # published: 52.5 M
    assert cost.gmacs == pytest.approx(8.39, abs=0.01)


def test_meta_count_equals_real_parameter_count() -> None:
    arch = get_reference("tiny-digits")
    real = build_unet(arch)
    assert sum(p.numel() for p in real.parameters()) == measure_cost(arch).params


def test_attention_is_counted() -> None:
    base = {
        "image_size": 16,
        "in_channels": 1,
        "base_channels": 16,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "norm_groups": 8,
        "head_channels": 16,
        "mid_attention": False,
    }
    without = measure_cost(parse_arch(base))
    with_attn = measure_cost(parse_arch({**base, "attention_resolutions": [16]}))
    # at 16x16 with 16 channels, Q.K^T and A.V alone are 2 * 256 * 256 * 16 MACs per block (2 blocks down+up... at least one)
    assert with_attn.macs - without.macs > 2 * 256 * 256 * 16


def test_architecture_features_reach_the_unet() -> None:
    arch = parse_arch(
        {
            "base_channels": 32,
            "channel_mult": [1, 2, 2],
            "num_res_blocks": 2,
            "attention_resolutions": [16],
            "head_channels": 32,
            "dropout": 0.2,
            "scale_shift_norm": True,
            "resblock_updown": True,
            "learn_sigma": True,
        }
    )
    kw = unet_kwargs(arch)
    assert kw["down_block_types"] == (
        "ResnetDownsampleBlock2D",
        "AttnDownBlock2D",
        "ResnetDownsampleBlock2D",
    )
    assert kw["up_block_types"] == (
        "ResnetUpsampleBlock2D",
        "AttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    )
    assert kw["resnet_time_scale_shift"] == "scale_shift"
    assert kw["out_channels"] == 6 and kw["dropout"] == 0.2 and kw["attention_head_dim"] == 32


def test_config_json_roundtrip(tmp_path) -> None:
    arch = get_reference("tiny-digits")
    model = build_unet(arch)
    model.save_config(tmp_path)
    again = UNet2DModel.from_config(UNet2DModel.load_config(tmp_path))
    for key, value in unet_kwargs(arch).items():
        got = again.config[key]
        assert (tuple(got) if isinstance(got, list) else got) == value, key
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x, 10).sample, again(x, 10).sample)


def test_budget_verdict_sentences() -> None:
    cost = measure_cost(get_reference("iddpm-cifar10"))
    ok, text = budget_verdict(cost, Budget(max_gmacs=7.0))
    assert not ok and text == "measured 8.39 GMACs, 20% over the 7 GMACs bound"
    ok, text = budget_verdict(cost, Budget(max_gmacs=20, min_gmacs=10))
    assert not ok and "16% under the 10 GMACs lower bound" in text
    ok, text = budget_verdict(cost, Budget(max_gmacs=20, max_params_m=50))
    assert not ok and "over the 50 M bound" in text
    ok, text = budget_verdict(cost, Budget(max_gmacs=8.4))
    assert ok and "within" in text


def test_cost_refuses_an_unvalidated_absurd_net_before_building(monkeypatch) -> None:
    # model_construct skips validation: a million blocks would take minutes and gigabytes to build
    absurd = ArchConfig.model_construct(
        **{**get_reference("tiny-digits").model_dump(), "num_res_blocks": 1_000_000}
    )

    def must_not_build(*args, **kwargs):
        raise AssertionError("built before the bounds were checked")

    monkeypatch.setattr(cost_mod, "build_unet", must_not_build)
    with pytest.raises(ArchitectureError, match="num_res_blocks.*less than or equal to 16"):
        measure_cost(absurd)
