"""`--device` checks and the CUDA math flags, which training sets only while it runs."""

from __future__ import annotations

import pytest
import torch

from diffnas.errors import UserError
from diffnas.train.device import check_device, fast_cuda_math

_FLAGS = (
    lambda: torch.backends.cudnn.benchmark,
    lambda: torch.backends.cuda.matmul.allow_tf32,
    lambda: torch.backends.cudnn.allow_tf32,
)


def _set_flags(value: bool) -> None:
    torch.backends.cudnn.benchmark = value
    torch.backends.cuda.matmul.allow_tf32 = value
    torch.backends.cudnn.allow_tf32 = value


def test_fast_cuda_math_sets_the_flags_only_inside_the_block() -> None:
    saved = [flag() for flag in _FLAGS]
    try:
        _set_flags(False)
        with fast_cuda_math("cuda"):
            assert [flag() for flag in _FLAGS] == [True, True, True]
        assert [flag() for flag in _FLAGS] == [False, False, False]
        with pytest.raises(RuntimeError), fast_cuda_math("cuda:0"):
            raise RuntimeError("a failed step")
        assert [flag() for flag in _FLAGS] == [False, False, False]  # restored on errors too
        with fast_cuda_math("cpu"):
            assert [flag() for flag in _FLAGS] == [False, False, False]  # CPU: untouched
    finally:
        for value, (name, obj) in zip(
            saved,
            [
                ("benchmark", torch.backends.cudnn),
                ("allow_tf32", torch.backends.cuda.matmul),
                ("allow_tf32", torch.backends.cudnn),
            ],
        ):
            setattr(obj, name, value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "mps"])
def test_check_device_refuses_unknown_names(name: str) -> None:
    with pytest.raises(UserError, match="unknown"):
        check_device(name)


def test_check_device_accepts_cpu_and_auto() -> None:
    assert check_device("cpu") == "cpu"
    assert check_device("auto") == "auto"
