"""Inputs of both experiments: options, lists, data and saved options, checked before a run
folder exists."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from diffnas.data.datasets import DataSpec, ImageData, check_data_fits, load_images
from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.runs import OPTIONS_FILE, read_run_json
from diffnas.space.search_space import SearchSpace

Options = TypeVar("Options", bound=BaseModel)


def load_space_data(space: SearchSpace, data: DataSpec) -> ImageData:
    """The images of `data`, read now (an unreadable file is refused before anything runs),
    once they have the channels and size the space's architectures take."""
    images = load_images(data)
    check_data_fits(
        images,
        (space.in_channels, space.image_size),
        f"space {space.name!r}",
        "use a --space made for this data (or --data-image-size)",
    )
    return images


def load_run_options(run_dir: Path, model: type[Options], kind: str) -> Options:
    """The saved options of a `kind` run folder (for `--resume`), or a `UserError` saying why not."""
    options = run_dir / OPTIONS_FILE
    if not options.is_file():
        raise UserError(
            f"--resume {str(run_dir)!r}: no {OPTIONS_FILE} there; give a {kind} run folder",
            field="resume",
        )
    try:
        return model.model_validate(read_run_json(options, f"{kind} options"))
    except ValidationError as err:
        raise UserError(
            f"--resume {str(run_dir)!r} is not a {kind} run folder: "
            + pydantic_message(err, f"{kind} options"),
            field="resume",
        ) from None


def int_list(text: str, option: str) -> list[int]:
    """`"100,400"` -> [100, 400]; anything else names `option` in a `UserError`."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(
            f"{option} {text!r}: expected whole numbers separated by commas, e.g. 100,400",
            field=option.lstrip("-").replace("-", "_"),
        ) from None


def word_list(text: str) -> list[str]:
    """`"rfid, kid"` -> ["rfid", "kid"]."""
    return [part.strip() for part in text.split(",") if part.strip()]


def config_error(err: ValidationError, what: str) -> UserError:
    return UserError(pydantic_message(err, what), field=first_field(err, what))
