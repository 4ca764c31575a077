"""SearchSpace: presets, membership, sampling, mutation, description and schema."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffnas.errors import ArchitectureError, UserError
from diffnas.model.builder import build_unet
from diffnas.space.references import get_reference
from diffnas.space.search_space import SEARCHED_FIELDS, list_presets, load_space

PRESETS = list_presets()


def test_presets_exist_and_hold_their_reference() -> None:
    assert {"cifar10-iddpm", "cifar10-ddpm", "tiny"} <= set(PRESETS)
    for name in PRESETS:
        space = load_space(name)
        assert space.reference is not None
        assert space.contains(get_reference(space.reference)), name


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), preset=st.sampled_from(PRESETS))
def test_every_sample_validates_builds_and_runs_on_meta(seed: int, preset: str) -> None:
    space = load_space(preset)
    arch = space.sample(random.Random(seed))
    assert space.contains(arch)
    model = build_unet(arch, device="meta")
    x = torch.empty(2, arch.in_channels, arch.image_size, arch.image_size, device="meta")
    out = model(x, torch.zeros(2, dtype=torch.long, device="meta")).sample
    assert tuple(out.shape) == (2, arch.out_channels, arch.image_size, arch.image_size)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), preset=st.sampled_from(PRESETS))
def test_mutations_stay_in_space_and_change_one_dimension(seed: int, preset: str) -> None:
    space = load_space(preset)
    rng = random.Random(seed)
    parent = space.sample(rng)
    child = space.mutate(parent, rng)
    assert space.contains(child)
    assert child.key() != parent.key()
    a, b = space.proposal_of(parent), space.proposal_of(child)
    changed = {f for f in SEARCHED_FIELDS if a[f] != b[f]} - {"head_channels"}
    # head width may follow an attention toggle (it is moot without attention)
    assert len(changed) <= 1


# A proposal in the tiny preset (presets/tiny.yaml), written by hand from its choices.
TINY_PROPOSAL = {
    "base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
    "attention_resolutions": [8], "mid_attention": True, "head_channels": 16, "dropout": 0.0,
    "scale_shift_norm": True, "resblock_updown": False, "norm_groups": 8,
}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [{"base_channels": 20}, {"channel_mult": [1]}, {"channel_mult": [1, 2, 2, 2]},
     {"channel_mult": [1, 4]}, {"attention_resolutions": [8, 8]},
     {"attention_resolutions": [2]}, {"dropout": 0.3}, {"mid_attention": "yes"},
     {"norm_groups": 16}, {"extra": 1}],
)  # fmt: skip
def test_json_schema_of_the_tiny_space_refuses_what_it_does_not_offer(change: dict) -> None:
    """The schema the LLM gets: the preset's choices, levels 2-3, no repeats, no other key."""
    schema = load_space("tiny").arch_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(TINY_PROPOSAL, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**TINY_PROPOSAL, **change}, schema)
    missing = {k: v for k, v in TINY_PROPOSAL.items() if k != "norm_groups"}
    with pytest.raises(jsonschema.ValidationError, match="'norm_groups' is a required property"):
        jsonschema.validate(missing, schema)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_presets_reference_fits_its_json_schema(preset: str) -> None:
    """The hand-written reference architectures (space/presets, space/references.py) are valid
    proposals, in the JSON form an LLM sends back."""
    space = load_space(preset)
    proposal = json.loads(json.dumps(space.proposal_of(get_reference(space.reference))))
    jsonschema.validate(proposal, space.arch_json_schema())


def test_sampling_is_deterministic_per_seed() -> None:
    space = load_space("tiny")
    a = [space.sample(random.Random(7)).key() for _ in range(2)]
    assert a[0] == a[1]


def test_complete_fills_fixed_fields_and_rejects_overrides() -> None:
    space = load_space("cifar10-iddpm")
    proposal = space.proposal_of(get_reference("iddpm-cifar10"))
    arch = space.complete(proposal)
    assert arch.learn_sigma and arch.image_size == 32
    with pytest.raises(ArchitectureError, match="'image_size' = 64 is fixed to 32"):
        space.complete({**proposal, "image_size": 64})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"base_channels": 256}, "field 'base_channels' = 256, allowed: [64, 96, 128, 160, 192]"),
        ({"num_res_blocks": 7}, "field 'num_res_blocks' = 7"),
        ({"channel_mult": [1, 2, 2, 5]}, "multipliers from [1, 2, 3, 4]"),
        ({"channel_mult": [2, 1, 2, 2]}, "non-decreasing"),
        ({"channel_mult": [1, 2, 2, 2, 2]}, "[3, 4] levels"),
        ({"dropout": 0.5}, "field 'dropout' = 0.5"),
        ({"head_channels": 128}, "field 'head_channels' = 128"),
    ],
)
def test_out_of_space_values_name_field_and_allowed(change: dict, fragment: str) -> None:
    space = load_space("cifar10-iddpm")
    proposal = {**space.proposal_of(get_reference("iddpm-cifar10")), **change}
    with pytest.raises(ArchitectureError) as err:
        space.complete(proposal)
    assert fragment in str(err.value)
    assert "outside space 'cifar10-iddpm'" in str(err.value)


def test_describe_mentions_every_dimension_and_budget() -> None:
    space = load_space("cifar10-iddpm")
    text = space.describe()
    for field in SEARCHED_FIELDS:
        assert field in text
    assert "4 to 8.4 GMACs" in text
    assert "true" in text and "True" not in text  # JSON spelling for the LLM


def test_bad_space_files(tmp_path) -> None:
    with pytest.raises(UserError, match="neither a preset"):
        load_space("no-such-space")
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nimage_size: 32\nbudget: {max_gmacs: 1, min_gmacs: 2}\n")
    with pytest.raises(UserError, match="min_gmacs 2.0 must be below max_gmacs 1.0"):
        load_space(path)
    path.write_text("- a list\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_space(path)


SPACE_YAML = """
name: s
image_size: 16
in_channels: 1
base_channels: [16]
num_levels: [2]
channel_mult_values: [1, 2]
num_res_blocks: [1]
head_channels: [16]
budget: {max_gmacs: 1}
"""


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ("mid_attention: []", "mid_attention", "at least 1 item"),
        ("dropout: []", "dropout", "at least 1 item"),
        ("norm_groups: []", "norm_groups", "at least 1 item"),
        ("scale_shift_norm: []", "scale_shift_norm", "at least 1 item"),
        ("resblock_updown: []", "resblock_updown", "at least 1 item"),
        # every choice inside ArchConfig's bounds
        ("num_res_blocks: [1, 1000000]", "num_res_blocks.1", "less than or equal to 16"),
        ("norm_groups: [0]", "norm_groups.0", "greater than or equal to 1"),
        ("dropout: [1.0]", "dropout.0", "less than 1"),
    ],
)
def test_space_choices_are_non_empty_and_within_arch_bounds(
    tmp_path, extra: str, field: str, fragment: str
) -> None:
    path = tmp_path / "s.yaml"
    # the extra line replaces the space's own (a key given twice is refused)
    key = extra.split(":")[0]
    kept = [line for line in SPACE_YAML.splitlines() if not line.startswith(f"{key}:")]
    path.write_text("\n".join([*kept, extra]) + "\n")
    with pytest.raises(UserError) as err:
        load_space(path)
    assert f"{field}=" in str(err.value) and fragment in str(err.value)
    assert "s.yaml" in str(err.value)


def test_the_minimal_space_samples(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SPACE_YAML)
    arch = load_space(path).sample(random.Random(0))
    assert arch.num_res_blocks == 1 and arch.image_size == 16


def test_binary_space_file_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(UserError, match="not a text file"):
        load_space(path)
