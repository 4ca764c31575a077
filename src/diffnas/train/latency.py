"""Measured latency of one denoiser forward pass, as the search's sampler runs it, and its cache.

MACs are a poor stand-in for what a deployed model costs: attention, memory-bound norms and
narrow channels take far more time per MAC than wide convolutions, and the ratio differs between
a laptop CPU and a GPU. This module times the pass itself. By default it runs it the way the
sampler of every evaluation does (`diffnas.train.sampling.sample_images` inside
`diffnas.execute.job.evaluate_candidate`): eval mode under `torch.inference_mode`, bf16 autocast
on CUDA and fp32 elsewhere (`sampler_dtype`), the weights in the memory layout training left them
(channels-last where the proxy recipe uses it), not compiled (the sampler never compiles), with
cuDNN autotuning and TF32 on CUDA (`fast_cuda_math`). Any of these can be changed for the
deployment one wants to measure.

`measure_latency` builds the architecture with random weights (the time does not depend on
them), runs `warmup` passes, then times `runs` passes one at a time, synchronising CUDA before
and after each, and keeps the median. On CPU it runs with `threads` torch threads: a search
measures with its evaluations' thread count.

A result is cached as one JSON file per (architecture hash, device name, settings, torch
version) - `LatencyMeter` - so a search pays once per architecture, and a resumed search or a
second search in the same `--runs` folder pays nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffnas.model.builder import build_unet
from diffnas.runs import write_json
from diffnas.space.arch import ArchConfig
from diffnas.train.device import check_device, fast_cuda_math, resolve_device
from diffnas.train.precision import cpu_bf16_support
from diffnas.train.recipe import TrainRecipe
from diffnas.train.sampling import sampler_dtype

Dtype = Literal["fp32", "bf16", "fp16"]
DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LatencySettings(BaseModel):
    """How one forward pass is timed; every value resolved (no "auto")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(..., description="torch device: cpu, cuda, cuda:N")
    dtype: Dtype = Field(..., description="fp32: no autocast; bf16/fp16: autocast to it")
    batch: int = Field(..., ge=1, description="images per forward pass")
    channels_last: bool = Field(..., description="weights in channels-last memory format")
    compile: bool = Field(..., description="torch.compile the model (compile time not timed)")
    threads: int | None = Field(..., ge=1, description="CPU: torch threads; None on CUDA")
    warmup: int = Field(..., ge=0, description="untimed passes first (cuDNN autotuning, caches)")
    runs: int = Field(..., ge=1, description="timed passes; the median is the latency")

    def conditions(self) -> str:
        """The settings in words, for sentences: `batch 1, cpu, fp32, 2 threads`."""
        parts = [f"batch {self.batch}", self.device, self.dtype]
        parts += ["channels-last"] if self.channels_last else []
        parts += ["compiled"] if self.compile else []
        parts += (
            [f"{self.threads} thread{'s' if self.threads != 1 else ''}"] if self.threads else []
        )
        return ", ".join(parts)


class LatencyOptions(BaseModel):
    """What the user asks for (search options, `diffnas cost --latency`); "auto" and None are
    resolved by `resolve` on this machine."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(
        "auto", description="auto (the proxy evaluation's device) | cpu | cuda | cuda:N"
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: as the sampler runs (bf16 autocast on CUDA, fp32 on CPU)"
    )
    batch: int = Field(1, ge=1, le=65536, description="images per forward pass")
    channels_last: bool | None = Field(
        None, description="None: as the proxy recipe trains on that device (on CUDA, off on CPU)"
    )
    compile: bool = Field(False, description="torch.compile (the sampler itself never compiles)")
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads; None: the search's evaluations' count"
    )
    warmup: int = Field(3, ge=0, le=1000, description="untimed passes before timing")
    runs: int = Field(10, ge=1, le=10000, description="timed passes; the median is kept")

    def resolve(
        self,
        *,
        default_device: str = "auto",
        recipe: TrainRecipe | None = None,
        default_threads: int | None = None,
    ) -> LatencySettings:
        """Concrete settings on this machine: `default_device` for "auto", the channels-last of
        `recipe` (resolved for that device), `default_threads` (else torch's count) on CPU."""
        name = check_device(default_device if self.device == "auto" else self.device)
        device = resolve_device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        dtype = sampler_dtype(device) if self.dtype == "auto" else self.dtype
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = recipe.channels_last if recipe is not None else device.type == "cuda"
        threads = None
        if device.type == "cpu":
            threads = self.threads or default_threads or torch.get_num_threads()
        return LatencySettings(
            device=str(device), dtype=dtype, batch=self.batch, channels_last=channels_last,
            compile=self.compile, threads=threads, warmup=self.warmup, runs=self.runs,
        )  # fmt: skip


class Latency(BaseModel):
    """One measurement: the median of `runs_ms` is `ms`, the latency of one forward pass."""

    model_config = ConfigDict(extra="forbid")

    arch_hash: str
    device_name: str  # the CPU model or the CUDA card: part of the cache key
    settings: LatencySettings
    torch: str
    ms: float = Field(..., ge=0)
    runs_ms: list[float]
    measured_at: float = 0.0  # unix time, for the record

    def sampling_s(self, steps: int) -> float:
        """Seconds to sample one batch with `steps` sampler steps: one forward pass per step
        (the scheduler's own arithmetic is not timed; it is tiny next to a UNet)."""
        return self.ms * steps / 1000.0


def device_name(device: str | torch.device) -> str:
    """`cpu: <model>` or `cuda: <card>`: a measurement holds on this kind of device only."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {cpu_bf16_support().model}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _threads(count: int | None):
    """`count` torch threads inside the block (torch's count is process-wide)."""
    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def measure_latency(arch: ArchConfig, settings: LatencySettings) -> Latency:
    """Time one forward pass of `arch` under `settings`: `warmup` passes, then the median of
    `runs` timed ones. The model is built with random weights and freed afterwards."""
    device = torch.device(settings.device)
    model = build_unet(arch, device=device).eval()
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if settings.compile else model
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (settings.batch, arch.in_channels, arch.image_size, arch.image_size)
    x = torch.randn(shape, generator=generator, device=device)
    t = torch.full((settings.batch,), 500, dtype=torch.long, device=device)
    autocast = (
        torch.autocast(device.type, dtype=_AUTOCAST[settings.dtype])
        if settings.dtype in _AUTOCAST
        else contextlib.nullcontext()
    )
    times = []
    with (
        _threads(settings.threads),
        fast_cuda_math(device),
        torch.inference_mode(),
        autocast,
    ):
        for _ in range(settings.warmup):
            forward(x, t)
        _sync(device)
        for _ in range(settings.runs):
            start = time.perf_counter()
            forward(x, t)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000.0)
    del model, forward
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Latency(
        arch_hash=arch.arch_hash(),
        device_name=device_name(device),
        settings=settings,
        torch=torch.__version__,
        ms=statistics.median(times),
        runs_ms=[round(v, 4) for v in times],
        measured_at=time.time(),
    )


def cache_key(arch: ArchConfig, settings: LatencySettings, name: str) -> str:
    """The cache file's name for (architecture, device name, settings, torch version). The
    device index is left out: two cards of the same model share their measurements."""
    fields = settings.model_dump()
    fields["device"] = torch.device(settings.device).type
    identity = {"device_name": name, "settings": fields, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{arch.arch_hash()}-{digest}"


Measure = Callable[[ArchConfig, LatencySettings], Latency]


class LatencyMeter:
    """Latency per architecture under fixed settings: from this process's memory, then the cache
    folder (one JSON file per key; None: no files), else measured (`measure`, injectable so tests
    can stand in a deterministic fake) and stored. `hits` and `misses` count the lookups."""

    def __init__(
        self,
        settings: LatencySettings,
        cache_dir: str | Path | None,
        measure: Measure | None = None,
    ) -> None:
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.measure = measure or measure_latency
        self.device_name = device_name(settings.device)
        self._seen: dict[str, Latency] = {}
        self.hits = self.misses = 0

    def path(self, arch: ArchConfig) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{cache_key(arch, self.settings, self.device_name)}.json"

    def latency(self, arch: ArchConfig) -> Latency:
        key = cache_key(arch, self.settings, self.device_name)
        if key in self._seen:
            self.hits += 1
            return self._seen[key]
        path = self.path(arch)
        found = _read(path) if path is not None else None
        if found is not None:
            self.hits += 1
        else:
            self.misses += 1
            found = self.measure(arch, self.settings)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, found.model_dump(mode="json"))
        self._seen[key] = found
        return found

    def __call__(self, arch: ArchConfig) -> float:
        """Milliseconds per forward pass (what the gate and the objective use)."""
        return self.latency(arch).ms


def _read(path: Path) -> Latency | None:
    """A cached measurement; a missing or damaged file is a miss (measured again, rewritten)."""
    try:
        return Latency.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None
