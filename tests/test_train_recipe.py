"""`resolve_recipe`: CPU defaults (bf16 where native, no channels-last), recorded as resolved."""

from __future__ import annotations

import pytest

import cpuinfo_samples
from cpuinfo_samples import use_cpuinfo
from diffnas.errors import UserError
from diffnas.train.recipe import TrainRecipe, resolve_recipe


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (cpuinfo_samples.SAPPHIRE_RAPIDS, True),
        (cpuinfo_samples.ZEN4, True),
        (cpuinfo_samples.CASCADE_LAKE, False),
        (cpuinfo_samples.GRAVITON3, True),
        (cpuinfo_samples.GRAVITON2, False),
    ],
    ids=["spr", "zen4", "cascade-lake", "graviton3", "graviton2"],
)
def test_cpu_default_is_bf16_exactly_where_native(monkeypatch, tmp_path, text, native) -> None:
    use_cpuinfo(monkeypatch, tmp_path, text)
    recipe, notes = resolve_recipe("proxy", "ddpm", {}, data_kind="npz", device_type="cpu")
    assert recipe.bf16_cpu is native  # a bool, never "auto": options.json says what ran
    assert recipe.channels_last is False
    assert recipe.autocast_bf16("cpu") is native
    assert any(note.startswith(f"bf16 autocast {'on' if native else 'off'}") for note in notes)


def test_explicit_choice_wins_over_the_cpu(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.ZEN4)
    for given in (False, "false"):  # --no-bf16-cpu, --set bf16_cpu=false (a bare word)
        recipe, notes = resolve_recipe(
            "proxy", "ddpm", {"bf16_cpu": given}, data_kind="npz", device_type="cpu"
        )
        assert recipe.bf16_cpu is False and recipe.autocast_bf16("cpu") is False
        assert not any("bf16" in note for note in notes)
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.CASCADE_LAKE)
    recipe, _ = resolve_recipe(
        "full", "iddpm", {"bf16_cpu": True}, data_kind="npz", device_type="cpu"
    )
    assert recipe.bf16_cpu is True
    recipe, _ = resolve_recipe(
        "proxy", "ddpm", {"bf16_cpu": "auto"}, data_kind="npz", device_type="cpu"
    )
    assert recipe.bf16_cpu is False


def test_cuda_keeps_its_own_levers(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.CASCADE_LAKE)
    recipe, notes = resolve_recipe("proxy", "ddpm", {}, data_kind="npz", device_type="cuda")
    assert recipe.channels_last is True and recipe.autocast_bf16("cuda") is True
    assert recipe.bf16_cpu is False  # resolved anyway, for a later resume on this CPU
    assert not any("bf16" in note for note in notes)
    fp32, _ = resolve_recipe("proxy", "ddpm", {"bf16": False}, data_kind="npz", device_type="cuda")
    assert fp32.autocast_bf16("cuda") is False


def test_bad_bf16_cpu_value_is_a_user_error() -> None:
    with pytest.raises(UserError, match="bf16_cpu"):
        resolve_recipe(
            "proxy", "ddpm", {"bf16_cpu": "sometimes"}, data_kind="npz", device_type="cpu"
        )
    assert TrainRecipe().bf16_cpu == "auto"


def test_a_short_full_run_warms_its_ema_up_and_says_why() -> None:
    """0.9999 without warm-up keeps 0.9999**steps of the initial weights in the EMA: 90 % after
    1,000 steps (closed form), so a short full run gets the proxy's warm-up, with a note."""
    recipe, notes = resolve_recipe(
        "full", "ddpm", {"steps": 1000}, data_kind="cifar10", device_type="cuda"
    )
    assert recipe.ema_warmup and recipe.ema_decay == 0.9999
    assert any("EMA warm-up on" in n and "90%" in n for n in notes), notes
    # the paper's length: 0.9999**800000 is 0; the preset stays as published
    recipe, notes = resolve_recipe("full", "ddpm", {}, data_kind="cifar10", device_type="cuda")
    assert not recipe.ema_warmup and not any("EMA" in n for n in notes)
    # 0.9999**50000 = 0.7 %: past the 1 % share, nothing to adapt
    recipe, _ = resolve_recipe("full", "ddpm", {"steps": 50_000}, data_kind="", device_type="cuda")
    assert not recipe.ema_warmup


def test_a_short_run_told_to_keep_its_fixed_ema_gets_a_warning() -> None:
    recipe, notes = resolve_recipe(
        "full", "iddpm", {"steps": 1000, "ema_warmup": False}, data_kind="", device_type="cuda"
    )
    assert not recipe.ema_warmup
    assert any(n.startswith("warning: EMA decay 0.9999") and "90%" in n for n in notes), notes


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [("weight_decay", "inf", "finite"), ("lr", float("nan"), "finite"),
     ("batch_size", 10**8, "4096"), ("steps", 10**9, "10000000"), ("grad_clip", 1e300, "1000000")],
)  # fmt: skip
def test_every_number_of_a_recipe_is_finite_and_bounded(key, value, fragment) -> None:
    with pytest.raises(UserError, match=key) as err:
        resolve_recipe("proxy", "ddpm", {key: value}, data_kind="", device_type="cpu")
    assert fragment in str(err.value)
