"""Mixed precision on CPU: whether this CPU has native bf16, and bf16 autocast with attention in fp32.

bf16 autocast pays on a CPU with native bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16, arm64
BF16): 1.3× to 1.8× the fp32 step here (`benchmarks/RESULTS.md`). Elsewhere the bf16 kernels
are emulated and slower than fp32, so `cpu_bf16_support()` decides the recipe's default.

On CPU, PyTorch's flash-attention kernel is slower in bf16 than in fp32 for the narrow heads
of small denoisers (measured here: 8 heads of 8 channels over 256 tokens, forward + backward,
133 ms in bf16 against 87 ms in fp32), while convolutions gain from bf16. So under CPU autocast
every `scaled_dot_product_attention` call runs in fp32 (its inputs upcast, its output cast
back); autograd then runs its backward in fp32 too. On CUDA nothing changes.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

CPUINFO = Path("/proc/cpuinfo")
# Flags that mean bf16 arithmetic in hardware: x86 (Linux `flags`) and arm64 (Linux `Features`).
# AVX512-BF16 alone is enough (AMD Zen 4 has no AMX); AMX-BF16 CPUs report both.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)


@dataclass(frozen=True)
class CpuBf16:
    """What this CPU is and whether it computes bf16 natively, with the evidence."""

    model: str  # e.g. "Intel(R) Xeon(R) Platinum 8480+"
    native_bf16: bool
    evidence: str  # the flags found, or why none were: shown by the benchmark and in notes


def parse_cpuinfo(text: str) -> CpuBf16 | None:
    """Read Linux /proc/cpuinfo text; None when it lists no CPU flags (then ask torch).

    Flags are matched as whole words: arm64's `svebf16` alone is not `bf16`, and x86's
    `avx512bw` (which lets oneDNN emulate bf16) is not native bf16.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # the first CPU speaks for all
    model = fields.get("model name") or fields.get("hardware") or _fallback_model()
    if "flags" in fields:
        wanted, words = X86_BF16_FLAGS, set(fields["flags"].split())
    elif "features" in fields:
        wanted, words = ARM_BF16_FLAGS, set(fields["features"].split())
    else:
        return None
    found = [flag for flag in wanted if flag in words]
    evidence = ", ".join(found) if found else f"none of {', '.join(wanted)} in /proc/cpuinfo"
    return CpuBf16(model=model, native_bf16=bool(found), evidence=evidence)


def _fallback_model() -> str:
    return platform.processor() or platform.machine() or "unknown CPU"


def _from_torch() -> CpuBf16:
    """Where there is no /proc/cpuinfo (macOS, Windows): torch's cpuinfo-based capabilities."""
    get_capabilities = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    caps = dict(get_capabilities()) if get_capabilities else {}
    found = [name for name in ("avx512_bf16", "amx_bf16", "bf16") if caps.get(name)]
    evidence = ", ".join(found) if found else "torch reports no native bf16"
    return CpuBf16(model=_fallback_model(), native_bf16=bool(found), evidence=evidence)


_detected: CpuBf16 | None = None  # the verdict for this process, found once


def cpu_bf16_support() -> CpuBf16:
    """This machine's CPU: native bf16 or not (/proc/cpuinfo first, then torch; found once)."""
    global _detected
    if _detected is None:
        try:
            parsed = parse_cpuinfo(CPUINFO.read_text(errors="replace"))
        except OSError:
            parsed = None
        _detected = parsed if parsed is not None else _from_torch()
    return _detected


class FP32AttentionOnCPU(TorchFunctionMode):
    """A torch-function mode that runs bf16 CPU attention in fp32."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query = args[0] if args else kwargs["query"]
            if query.device.type == "cpu" and (
                query.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")
            ):
                return _fp32_attention(func, args, kwargs)
        return func(*args, **kwargs)


def _fp32_attention(func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    names = ("query", "key", "value")
    qkv = [args[i] if i < len(args) else kwargs.pop(names[i]) for i in range(3)]
    out_dtype = torch.bfloat16 if torch.is_autocast_enabled("cpu") else qkv[0].dtype
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.is_floating_point():
        kwargs["attn_mask"] = mask.float()
    with torch.autocast("cpu", enabled=False):
        out = func(*(t.float() for t in qkv), *args[3:], **kwargs)
    return out.to(out_dtype)
