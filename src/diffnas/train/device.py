"""The devices training and sampling run on: `--device` checked, and CUDA math flags scoped."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from diffnas.errors import UserError

# The devices the trainer and samplers are written and tested for.
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA where there is a GPU, else the CPU; other names as torch spells them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> str:
    """`--device` as given, once it names a device this machine has; else a `UserError`."""
    if not _DEVICE_RE.match(name):
        raise UserError(
            f"--device {name!r} is unknown; use auto, cpu, cuda or cuda:N", field="device"
        )
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"--device {name!r}: no CUDA device is available; use cpu or auto", field="device"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise UserError(
                f"--device {name!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}",
                field="device",
            )
    return name


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes a run on `device` may use, what they are): a GPU's total memory, or this
    machine's available RAM (`MemAvailable` of /proc/meminfo, else physical memory); None
    where neither can be read."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return int(props.total_memory), f"the memory of cuda:{index} ({props.name})"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "this machine's available memory"
    except OSError:
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return int(pages * size), "this machine's memory"
    except (ValueError, OSError, AttributeError):
        return None, "memory"


@contextmanager
def fast_cuda_math(device: torch.device | str) -> Iterator[None]:
    """cuDNN autotuning and TF32 matmuls/convolutions while training on CUDA.

    The flags are process-wide in torch, so they are set only inside this block and the
    previous values come back after it: a caller's own choice (a benchmark comparing fp32
    with TF32, a sampler after training) is not changed behind its back.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        ) = saved
