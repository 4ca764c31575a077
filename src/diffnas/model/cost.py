"""What one forward pass of a candidate costs: parameters, MACs and FLOPs.

Counted on the `meta` device: the model is built without memory and the forward pass runs
shape inference only, so a 50 M-parameter net is counted in well under a second with no
allocation. `torch.utils.flop_counter.FlopCounterMode` counts every matmul, convolution
and attention product (on `meta`, scaled-dot-product attention runs its reference math
path, so Q.K^T and A.V are seen; on real CPU tensors the fused kernel would be missed).
Norms, activations and additions are not counted, the usual convention (they are a few
percent of the total). FLOPs = 2 x MACs everywhere in diffnas.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from torch.utils.flop_counter import FlopCounterMode

from diffnas.model.builder import build_unet
from diffnas.space.arch import ArchConfig, parse_arch
from diffnas.space.search_space import Budget


class Cost(BaseModel):
    """Cost of one forward pass of one image at the architecture's resolution."""

    params: int
    macs: int
    image_size: int
    # elements of every module's output in one forward pass of one image: what training keeps
    # for the backward pass, roughly (the memory estimate of a run's plan)
    activations: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def as_dict(self) -> dict[str, float | int]:
        return {
            "params": self.params,
            "params_m": round(self.params_m, 4),
            "macs": self.macs,
            "gmacs": round(self.gmacs, 4),
            "flops": self.flops,
            "gflops": round(self.flops / 1e9, 4),
            "image_size": self.image_size,
        }


# Costs already counted in this process, by the architecture's JSON: the gate, the proposers,
# the plan and the memory count the same architectures again and again (a search answered
# from a table spent most of its time here). Bounded: a long study never holds more.
_COUNTED: dict[str, Cost] = {}
_MAX_COUNTED = 4096


def measure_cost(arch: ArchConfig) -> Cost:
    """Parameters and MACs of one forward pass (batch 1), counted on the meta device.

    Refuses (`ArchitectureError`) an architecture outside `ArchConfig`'s bounds before
    building anything: even on meta, a net of a million blocks takes minutes and gigabytes
    of Python objects to build. A validated `ArchConfig` always passes; one made with
    `model_construct` (no validation) is checked here. Counted once per process.
    """
    parse_arch(arch.model_dump())
    key = arch.model_dump_json()
    if key not in _COUNTED:
        if len(_COUNTED) >= _MAX_COUNTED:
            _COUNTED.clear()
        _COUNTED[key] = _count(arch)
    return _COUNTED[key].model_copy()


def _count(arch: ArchConfig) -> Cost:
    model = build_unet(arch, device="meta")
    params = sum(p.numel() for p in model.parameters())
    x = torch.empty(1, arch.in_channels, arch.image_size, arch.image_size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    outputs = [0]

    def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs[0] += output.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if not any(m.children())]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x, t)
    finally:
        for handle in handles:
            handle.remove()
    return Cost(
        params=params,
        macs=counter.get_total_flops() // 2,
        image_size=arch.image_size,
        activations=outputs[0],
    )


def training_bytes(cost: Cost, batch_size: int) -> int:
    """Rough memory of training at `batch_size` in fp32: weights, gradients, AdamW's two
    moments and the EMA copy (5 x 4 bytes per parameter), and every module's output per image
    kept for the backward pass. An estimate for the plan's refusal, not a measurement."""
    return 20 * cost.params + 4 * cost.activations * batch_size


def budget_verdict(cost: Cost, budget: Budget) -> tuple[bool, str]:
    """(within budget?, one sentence with the measured value, the bound and the overshoot)."""
    g = cost.gmacs
    if g > budget.max_gmacs:
        over = 100 * (g / budget.max_gmacs - 1)
        return (
            False,
            f"measured {g:.3g} GMACs, {over:.0f}% over the {budget.max_gmacs:g} GMACs bound",
        )
    if g < budget.min_gmacs:
        under = 100 * (1 - g / budget.min_gmacs)
        return (
            False,
            f"measured {g:.3g} GMACs, {under:.0f}% under the {budget.min_gmacs:g} GMACs lower bound",
        )
    if budget.max_params_m is not None and cost.params_m > budget.max_params_m:
        over = 100 * (cost.params_m / budget.max_params_m - 1)
        return False, (
            f"measured {cost.params_m:.3g} M parameters, {over:.0f}% over the {budget.max_params_m:g} M bound"
        )
    return True, (
        f"measured {g:.3g} GMACs, within the {budget.min_gmacs:g}-{budget.max_gmacs:g} GMACs budget "
        f"({100 * g / budget.max_gmacs:.0f}% of the bound)"
    )


# Compute estimates of a run from the cost of one forward pass (FLOPs = 2 x MACs).
def training_flops(forward_flops: int, steps: int, batch_size: int) -> int:
    """Optimizer steps x images per step x 3 forward passes (forward + backward ≈ 3 forwards)."""
    return 3 * forward_flops * steps * batch_size


def sampling_flops(forward_flops: int, images: int, sampler_steps: int) -> int:
    """One forward pass per image per sampler step."""
    return forward_flops * images * sampler_steps
