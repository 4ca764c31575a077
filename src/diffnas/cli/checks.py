"""Checks shared by the commands: the device, scoring needs, and what `--resume` refuses."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import torch
import typer

from diffnas.data.datasets import ImageData
from diffnas.errors import UserError
from diffnas.evaluate.features import INCEPTION_ENV, resolve_inception_weights

# The devices the trainer and samplers are written and tested for.
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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


def check_scoring(images: ImageData, extractor: str, inception_weights: str | None) -> None:
    """What scoring `images` needs, checked before sampling and before a run folder exists."""
    if extractor == "classifier" and images.y is None:
        raise UserError(
            f"data {images.name} has no labels, and the classifier extractor is trained on "
            "them; use labelled data or --extractor inception",
            field="extractor",
        )
    if extractor == "inception":
        if images.channels not in (1, 3):
            raise UserError(
                f"data {images.name} has {images.channels} channels; the inception extractor "
                "takes 1 or 3",
                field="extractor",
            )
        if inception_weights or os.environ.get(INCEPTION_ENV):
            # a named file must exist and be the right one; a download is left to scoring
            resolve_inception_weights(inception_weights, allow_download=False)


def given_options(ctx: typer.Context, ignore: Iterable[str] = ()) -> list[str]:
    """The options and arguments typed on the command line (not left at their default).

    Asked of click's parameter sources, so an option given with its default value counts
    as given, and an option added to a command later is covered without a list to update.
    """
    skip = set(ignore)
    given = []
    for param in ctx.command.params:
        if param.name in skip or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(_spelling(param))
    return given


def _spelling(param: Any) -> str:
    """How the user writes a parameter: its long option (`--num`, not `-n`) or ARGUMENT."""
    if not param.opts[0].startswith("-"):
        return param.name.upper()
    return max(param.opts, key=lambda opt: opt.startswith("--"))


def refuse_on_resume(ctx: typer.Context, allowed: Iterable[str]) -> None:
    """`--resume` continues a run with its saved options: any option but `allowed` is refused."""
    allowed = set(allowed)
    given = given_options(ctx, ignore={"resume", *allowed})
    if given:
        may = [_spelling(p) for p in ctx.command.params if p.name in allowed]
        raise UserError(
            f"--resume continues a run with its saved options; drop {', '.join(given)} "
            f"(with --resume only {', '.join(may) or 'nothing else'} may be given)",
            field="resume",
        )
