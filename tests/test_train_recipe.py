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
