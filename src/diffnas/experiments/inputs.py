"""Inputs of both experiments: options, lists and data, checked before a run folder exists."""

from __future__ import annotations

from pydantic import ValidationError

from diffnas.data.datasets import DataSpec, ImageData, check_data_fits, load_images
from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.space.search_space import SearchSpace


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
