"""Latency of one forward pass: the real measurement on a tiny net, the settings, and the cache.

No test asserts a time: the machine is shared. The cache tests count calls of a fake
measurement, which is what decides whether a search pays again.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from diffnas.train import latency as latency_mod
from diffnas.train.latency import (
    Latency,
    LatencyMeter,
    LatencyOptions,
    LatencySettings,
    measure_latency,
)
from diffnas.train.recipe import TrainRecipe
from tiny_models import TINY_JOB_ARCH

CPU = LatencySettings(
    device="cpu", dtype="fp32", batch=1, channels_last=False, compile=False, threads=1,
    warmup=1, runs=3,
)  # fmt: skip


def test_a_real_measurement_of_a_tiny_net_is_the_median_of_its_runs() -> None:
    measured = measure_latency(TINY_JOB_ARCH, CPU.model_copy(update={"batch": 2}))
    assert len(measured.runs_ms) == 3
    assert all(v > 0 for v in measured.runs_ms)
    assert measured.ms == pytest.approx(statistics.median(measured.runs_ms), rel=1e-3)
    assert measured.arch_hash == TINY_JOB_ARCH.arch_hash()
    assert measured.device_name.startswith("cpu: ")
    assert measured.torch == torch.__version__
    assert measured.sampling_s(50) == pytest.approx(measured.ms * 50 / 1000)
    assert torch.get_num_threads() == 1  # the conftest's count is back after the measurement


def test_the_measurement_runs_under_the_requested_dtype_and_layout(monkeypatch) -> None:
    seen = []
    real_build = latency_mod.build_unet

    def spy_build(arch, device):
        model = real_build(arch, device=device)
        model.register_forward_hook(
            lambda module, args, out: seen.append(
                (
                    torch.is_autocast_enabled("cpu"),
                    torch.is_inference_mode_enabled(),
                    module.training,
                    module.down_blocks[0]
                    .resnets[0]
                    .conv1.weight.is_contiguous(memory_format=torch.channels_last),
                )
            )
        )
        return model

    monkeypatch.setattr(latency_mod, "build_unet", spy_build)
    measure_latency(TINY_JOB_ARCH, CPU)
    assert set(seen) == {(False, True, False, False)}  # the sampler's CPU pass: fp32, eval
    seen.clear()
    measure_latency(TINY_JOB_ARCH, CPU.model_copy(update={"dtype": "bf16", "channels_last": True}))
    assert set(seen) == {(True, True, False, True)}
    assert len(seen) == CPU.warmup + CPU.runs


def test_options_resolve_as_the_sampler_runs_on_this_machine() -> None:
    settings = LatencyOptions().resolve(default_device="cpu", default_threads=3)
    assert (settings.device, settings.dtype, settings.threads) == ("cpu", "fp32", 3)
    assert settings.channels_last is False  # no recipe: channels-last on CUDA only
    recipe = TrainRecipe(channels_last=True)
    assert LatencyOptions().resolve(default_device="cpu", recipe=recipe).channels_last is True
    explicit = LatencyOptions(dtype="bf16", threads=2, channels_last=False, batch=8)
    settings = explicit.resolve(default_device="cpu", recipe=recipe, default_threads=5)
    assert (settings.dtype, settings.threads, settings.channels_last, settings.batch) == (
        "bf16", 2, False, 8,
    )  # fmt: skip
    assert settings.conditions() == "batch 8, cpu, bf16, 2 threads"


class FakeMeasure:
    """A deterministic stand-in for the timing: counts its calls."""

    def __init__(self) -> None:
        self.calls: list[LatencySettings] = []

    def __call__(self, arch, settings: LatencySettings) -> Latency:
        self.calls.append(settings)
        ms = 1.0 + settings.batch + 0.5 * (settings.dtype == "bf16")
        return Latency(
            arch_hash=arch.arch_hash(), device_name="fake", settings=settings,
            torch=torch.__version__, ms=ms, runs_ms=[ms],
        )  # fmt: skip


@pytest.fixture
def named_devices(monkeypatch):
    # two kinds of device without needing a GPU: the name is what the key holds
    names = {"cpu": "cpu: Test CPU", "cuda": "cuda: Test Card"}
    monkeypatch.setattr(latency_mod, "device_name", lambda device: names[torch.device(device).type])


def test_the_cache_hits_on_a_second_call_and_misses_when_device_dtype_or_batch_change(
    tmp_path, named_devices
) -> None:
    fake = FakeMeasure()
    first = LatencyMeter(CPU, tmp_path, measure=fake)
    assert first(TINY_JOB_ARCH) == 2.0
    assert (first.hits, first.misses) == (0, 1)
    assert first(TINY_JOB_ARCH) == 2.0  # the same meter: from memory
    # a new meter (a resumed search, another process) reads the file
    again = LatencyMeter(CPU, tmp_path, measure=fake)
    assert again(TINY_JOB_ARCH) == 2.0
    assert (again.hits, again.misses) == (1, 0)
    assert len(fake.calls) == 1
    changed = {
        "device": CPU.model_copy(update={"device": "cuda:0", "threads": None}),
        "dtype": CPU.model_copy(update={"dtype": "bf16"}),
        "batch": CPU.model_copy(update={"batch": 4}),
        "threads": CPU.model_copy(update={"threads": 2}),
    }
    for what, settings in changed.items():
        meter = LatencyMeter(settings, tmp_path, measure=fake)
        meter(TINY_JOB_ARCH)
        assert (meter.hits, meter.misses) == (0, 1), what
        assert fake.calls[-1] == settings
    assert len(fake.calls) == 1 + len(changed)
    assert len(list(tmp_path.glob("*.json"))) == 1 + len(changed)
    # two cards of one model share their measurements: the index is not in the key
    card = changed["device"]
    other = LatencyMeter(card.model_copy(update={"device": "cuda:1"}), tmp_path, measure=fake)
    other(TINY_JOB_ARCH)
    assert (other.hits, other.misses) == (1, 0)


def test_a_damaged_cache_file_is_measured_again(tmp_path, named_devices) -> None:
    fake = FakeMeasure()
    meter = LatencyMeter(CPU, tmp_path, measure=fake)
    meter(TINY_JOB_ARCH)
    path = meter.path(TINY_JOB_ARCH)
    assert path is not None and path.is_file()
    path.write_text("{not json")
    fresh = LatencyMeter(CPU, tmp_path, measure=fake)
    assert fresh(TINY_JOB_ARCH) == 2.0
    assert (fresh.hits, fresh.misses, len(fake.calls)) == (0, 1, 2)
    assert Latency.model_validate_json(path.read_text()).ms == 2.0  # rewritten whole


def test_without_a_cache_folder_nothing_is_written(tmp_path, named_devices) -> None:
    fake = FakeMeasure()
    meter = LatencyMeter(CPU, None, measure=fake)
    meter(TINY_JOB_ARCH)
    meter(TINY_JOB_ARCH)
    assert (meter.hits, meter.misses) == (1, 1)
    assert meter.path(TINY_JOB_ARCH) is None
