"""Builder (ArchConfig -> UNet2DModel, config.json round-trip) and the meta-device cost model."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers import UNet2DModel

from diffnas.errors import ArchitectureError
from diffnas.model import cost as cost_mod
from diffnas.model.builder import build_unet, unet_kwargs
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.arch import ArchConfig, parse_arch
from diffnas.space.references import get_reference
from diffnas.space.search_space import Budget, load_space


def closed_form_macs(arch: ArchConfig) -> int:
    """MACs of one forward pass of the DDPM/IDDPM UNet, from its structure alone (Ho et al. 2020
    App. B, IDDPM's unet.py), not from any counter: a k×k convolution costs H·W·Cout·Cin·k² at
    its output resolution, a linear layer in·out, self-attention over HW positions of C channels
    4·HW·C² for q, k, v and the output projection plus (HW)²·C each for Q·Kᵀ and A·V. Resampling
    by convolutions (resblock_updown false)."""
    size, channels = arch.image_size, arch.level_channels
    emb = 4 * channels[0]  # timestep embedding width
    emb_out = (
        2 if arch.scale_shift_norm else 1
    )  # scale-shift norm: the projection gives scale and shift

    def conv(hw: int, cin: int, cout: int, k: int = 3) -> int:
        return hw * cout * cin * k * k

    def resblock(hw: int, cin: int, cout: int) -> int:
        skip = conv(hw, cin, cout, k=1) if cin != cout else 0
        return conv(hw, cin, cout) + emb * cout * emb_out + conv(hw, cout, cout) + skip

    def attention(hw: int, c: int) -> int:
        return 4 * hw * c * c + 2 * hw * hw * c

    macs = channels[0] * emb + emb * emb + conv(size * size, arch.in_channels, channels[0])
    skips, c_prev, res = [channels[0]], channels[0], size
    for level, c in enumerate(channels):
        for _ in range(arch.num_res_blocks):
            macs += resblock(res * res, c_prev, c)
            macs += attention(res * res, c) if arch.attention_levels[level] else 0
            skips.append(c_prev := c)
        if level < len(channels) - 1:  # stride-2 convolution
            res //= 2
            macs += conv(res * res, c, c)
            skips.append(c)
    macs += 2 * resblock(res * res, c_prev, c_prev)
    macs += attention(res * res, c_prev) if arch.mid_attention else 0
    for level in reversed(range(len(channels))):
        c = channels[level]
        for _ in range(arch.num_res_blocks + 1):  # each block takes one skip connection
            macs += resblock(res * res, c_prev + skips.pop(), c)
            macs += attention(res * res, c) if arch.attention_levels[level] else 0
            c_prev = c
        if level > 0:  # nearest-neighbour upsampling, then a 3×3 convolution
            res *= 2
            macs += conv(res * res, c, c)
    return macs + conv(size * size, channels[0], arch.out_channels)


def test_a_net_small_enough_to_count_by_hand() -> None:
    arch = parse_arch(
        {"image_size": 4, "in_channels": 1, "base_channels": 8, "channel_mult": [1],
         "num_res_blocks": 1, "mid_attention": False, "norm_groups": 4}
    )  # fmt: skip
    # 4×4 pixels, 8 channels, timestep embedding 32 wide:
    #   timestep MLP 8·32 + 32·32 = 1,280; input conv 16·8·1·9 = 1,152
    #   a residual block 8→8: two convs 16·8·8·9 = 9,216 each + its embedding projection 32·8 = 18,688
    #   down: one block; middle: two blocks; up: two blocks on the skip-concatenated 16 channels,
    #   each 16·8·16·9 + 32·8 + 9,216 + a 1×1 shortcut 16·8·16 = 29,952; output conv 16·1·8·9 = 1,152
    by_hand = 1280 + 1152 + 18688 + 2 * 18688 + 2 * 29952 + 1152
    assert by_hand == 119_552 == closed_form_macs(arch)
    assert measure_cost(arch).macs == by_hand


@pytest.mark.parametrize(
    ("name", "published_params_m"), [("ddpm-cifar10", 35.7), ("iddpm-cifar10", 52.5)]
)
def test_reference_counts_match_the_papers_and_the_closed_form(name, published_params_m) -> None:
    arch = get_reference(name)
    cost = measure_cost(arch)
    assert round(cost.params / 1e6, 1) == published_params_m  # Ho et al.; Nichol & Dhariwal
    assert cost.macs == closed_form_macs(arch)
    assert cost.gmacs == pytest.approx(
        {"ddpm-cifar10": 6.22, "iddpm-cifar10": 8.39}[name], abs=0.005
    )


def test_counts_match_the_closed_form_across_the_space() -> None:
    space, rng = load_space("tiny"), random.Random(3)
    archs = [space.sample(rng) for _ in range(12)]  # scale-shift, attention, mid attention vary
    archs = [arch for arch in archs if not arch.resblock_updown][:5]
    assert archs
    for arch in archs:
        assert measure_cost(arch).macs == closed_form_macs(arch), arch.summary()


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
    # Attention at 16×16 (256 positions, 16 channels) in the 1 down and 2 up blocks of that level:
    # q, k, v, out projections 4·256·16² plus Q·Kᵀ and A·V 2·256²·16 each time.
    assert with_attn.macs - without.macs == 3 * (4 * 256 * 16**2 + 2 * 256**2 * 16)


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


def test_an_architecture_is_counted_once_per_process(monkeypatch) -> None:
    builds = []
    real = cost_mod.build_unet
    monkeypatch.setattr(
        cost_mod, "build_unet", lambda arch, **kw: builds.append(arch) or real(arch, **kw)
    )
    monkeypatch.setattr(cost_mod, "_COUNTED", {})
    arch = get_reference("tiny-digits")
    first = measure_cost(arch)
    first.macs = -1  # a caller changing its copy changes nothing for the next one
    again = measure_cost(arch.model_copy())
    assert len(builds) == 1 and again.macs > 0
    wider = arch.model_copy(update={"base_channels": arch.base_channels * 2})
    assert measure_cost(wider).params > again.params and len(builds) == 2
