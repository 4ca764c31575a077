"""ArchConfig: structural validation, canonical keys and spellings."""

from __future__ import annotations

import json
import random

import pytest

from diffnas.errors import ArchitectureError
from diffnas.space.arch import ArchConfig, load_arch, max_levels, parse_arch
from diffnas.space.references import REFERENCE_ARCHS

BASE = {
    "base_channels": 64,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 2,
    "attention_resolutions": [16, 8],
}


def test_valid_arch_has_expected_derived_fields() -> None:
    arch = parse_arch({**BASE, "head_channels": 32, "learn_sigma": True})
    assert arch.level_resolutions == [32, 16, 8]
    assert arch.level_channels == [64, 128, 128]
    assert arch.attention_levels == [False, True, True]
    assert arch.out_channels == 6
    assert arch.head_width == 32


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"base_channels": 100}, "norm_groups", "not divisible by norm_groups 32"),
        ({"channel_mult": [1, 2, 2, 2, 2, 2]}, "channel_mult", "at most 5 levels"),
        ({"attention_resolutions": [12]}, "attention_resolutions", "never reaches resolution 12"),
        ({"attention_resolutions": [4]}, "attention_resolutions", "never reaches resolution 4"),
        ({"head_channels": 48}, "head_channels", "not divisible by head_channels 48"),
        ({"num_heads": 3}, "num_heads", "not divisible by num_heads 3"),
        ({"num_heads": 2, "head_channels": 32}, "num_heads", "not both"),
        ({"colour": "blue"}, "colour", "unknown field 'colour'"),
        ({"num_res_blocks": "2"}, "num_res_blocks", "valid integer"),
        ({"dropout": 1.5}, "dropout", "less than 1"),
        ({"scale_shift_norm": "yes"}, "scale_shift_norm", "valid boolean"),
        ({"channel_mult": [1, 0]}, "channel_mult", "greater than or equal to 1"),
        # the bounds (README's ArchConfig table)
        ({"base_channels": 4097}, "base_channels", "less than or equal to 4096"),
        ({"base_channels": 10**30}, "base_channels", "less than or equal to 4096"),
        ({"num_res_blocks": 1_000_000}, "num_res_blocks", "less than or equal to 16"),
        ({"channel_mult": [1, 17]}, "channel_mult", "less than or equal to 16"),
        ({"channel_mult": [1] * 9, "image_size": 1024}, "channel_mult", "at most 8 items"),
        ({"image_size": 2048}, "image_size", "less than or equal to 1024"),
        ({"in_channels": 65}, "in_channels", "less than or equal to 64"),
        ({"head_channels": 2048}, "head_channels", "less than or equal to 1024"),
        ({"num_heads": 257}, "num_heads", "less than or equal to 256"),
        ({"norm_groups": 2048}, "norm_groups", "less than or equal to 1024"),
    ],
)
def test_invalid_architectures_name_field_and_rule(change: dict, field: str, fragment: str) -> None:
    with pytest.raises(ArchitectureError) as err:
        parse_arch({**BASE, **change})
    message = str(err.value)
    assert field in message
    assert fragment in message
    assert "\n" not in message  # one paragraph


def test_missing_field_and_non_object_are_rejected() -> None:
    with pytest.raises(ArchitectureError, match="missing field 'base_channels'"):
        parse_arch({"channel_mult": [1, 2], "num_res_blocks": 1})
    with pytest.raises(ArchitectureError, match="expected a JSON object"):
        parse_arch([1, 2, 3])


def test_num_heads_needs_one_attention_width() -> None:
    with pytest.raises(ArchitectureError, match="different widths"):
        parse_arch({**BASE, "channel_mult": [1, 2, 4], "num_heads": 2})


def test_canonical_key_ignores_order_and_spelling() -> None:
    a = parse_arch({**BASE, "head_channels": 64})
    keys = list(BASE) + ["head_channels"]
    random.Random(3).shuffle(keys)
    shuffled = {k: {**BASE, "head_channels": 64}[k] for k in keys}
    shuffled["attention_resolutions"] = [8, 16]
    b = parse_arch(shuffled)
    c = parse_arch(
        {
            "num_channels": 64,
            "channel_mult": "1,2,2",
            "num_res_blocks": 2,
            "attention_resolutions": "8,16",
            "num_heads": 2,
        }
    )
    assert a.key() == b.key() == c.key()
    assert a.arch_hash() == b.arch_hash() == c.arch_hash()
    assert len(a.arch_hash()) == 12


def test_canonical_key_separates_different_architectures() -> None:
    a = parse_arch({**BASE, "head_channels": 64})
    assert a.key() != parse_arch({**BASE, "head_channels": 32}).key()
    assert a.key() != parse_arch({**BASE, "head_channels": 64, "num_res_blocks": 3}).key()
    # with no attention anywhere the head setting is moot
    plain = {**BASE, "attention_resolutions": [], "mid_attention": False}
    assert (
        parse_arch({**plain, "head_channels": 32}).key()
        == parse_arch({**plain, "head_channels": 64}).key()
    )


def test_arch_json_roundtrip(tmp_path) -> None:
    for arch in REFERENCE_ARCHS.values():
        path = tmp_path / "a.json"
        path.write_text(arch.to_json())
        assert load_arch(path) == arch
        assert ArchConfig.model_validate(json.loads(arch.to_json())).key() == arch.key()


def test_load_arch_reports_bad_files(tmp_path) -> None:
    with pytest.raises(ArchitectureError, match="does not exist"):
        load_arch(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        load_arch(bad)


def test_max_levels() -> None:
    assert max_levels(32) == 5  # 32, 16, 8, 4, 2
    assert max_levels(16) == 4
    assert max_levels(12) == 3  # 12, 6, 3: 3 is odd, so no fourth level
