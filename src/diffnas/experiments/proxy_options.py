"""The options of `diffnas proxy-check` (`ProxyCheckConfig`, saved as `options.json`): built
from the command line's flat options, or reloaded for `--resume`; with `--archs-from`, the
space and data default to that search's.

What a study measures (proxy settings, the reference, seeds, the executor) is shared with
`diffnas tabulate` in `study.py`; this module adds what only proxy-check asks: how many
architectures, drawn how, and the statistics' k and bootstrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from diffnas import limits as L
from diffnas.experiments.inputs import config_error
from diffnas.experiments.study import StudyConfig, study_fields
from diffnas.runs import load_options
from diffnas.search.config import SearchConfig


class ProxyCheckConfig(StudyConfig):
    """Every option of a proxy-check study (saved as `options.json`; `--resume` reloads it)."""

    num_archs: int = Field(8, ge=3, le=1000, description="architectures compared")
    arch_seed: int = Field(
        0, ge=0, le=L.MAX_SEED, description="seed of the uniform architecture draws"
    )
    archs_from: str | None = Field(
        None, description="take the architectures from this search run folder instead"
    )
    top_k: int = Field(3, ge=1, le=1000, description="k of the top-k overlap")
    bootstrap: int = Field(
        2000, ge=100, le=1_000_000, description="bootstrap resamples of the architectures"
    )


def build_config(options: dict[str, Any]) -> ProxyCheckConfig:
    """The config of the command line's flat options, where None means the default; with
    `archs_from`, the space and data default to that search's."""
    given = {k: v for k, v in options.items() if v is not None}
    if "archs_from" in given:
        for key, value in search_defaults(Path(given["archs_from"])).items():
            if value is not None:
                given.setdefault(key, value)
    fields = study_fields(given)
    fields.update(
        {k: given[k] for k in ("arch_seed", "archs_from", "top_k", "bootstrap") if k in given}
    )
    if "archs" in given:
        fields["num_archs"] = given["archs"]
    try:
        return ProxyCheckConfig(**fields)
    except ValidationError as err:
        raise config_error(err, "proxy-check option") from None


def load_config(run_dir: Path) -> ProxyCheckConfig:
    return load_options(run_dir, ProxyCheckConfig, kind="proxy-check")


def search_config(run_dir: Path) -> SearchConfig:
    """The options of the search run folder `--archs-from` names."""
    return load_options(run_dir, SearchConfig, kind="search", option="--archs-from")


def search_defaults(run_dir: Path) -> dict[str, Any]:
    """The space and data of a search run folder: a study of its candidates uses the same."""
    config = search_config(run_dir)
    return {
        "space": config.space,
        "data": config.data,
        "data_subset": config.data_subset,
        "data_image_size": config.data_image_size,
    }
