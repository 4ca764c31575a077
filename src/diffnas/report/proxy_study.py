"""A proxy study for `diffnas report --proxy-check PATH`: proxy against reference scores, one
point per architecture, with Kendall's tau.

PATH is what `diffnas proxy-check` writes: its run folder, or that folder's `summary.json`
(`diffnas.experiments.proxy_summary` writes it). The report shows the proxy setting with the
study's best Kendall tau, each point an architecture's mean over the seeds; every setting,
with its interval over the seeds, is in the folder's `summary.md`. PATH may also be a JSON file
of pairs measured elsewhere: `{"proxy_label": ..., "reference_label": ..., "pairs": [{"proxy":
x, "reference": y, "label": ...}]}`, or just the list of pairs.

The report reads the summary with its own models (only the fields it shows), so it imports
nothing of the experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from diffnas.errors import UserError
from diffnas.layout import SUMMARY_FILE, SUMMARY_MD
from diffnas.runs import read_file


@dataclass
class ProxyStudy:
    """Pairs of (proxy score, reference score, point label) for the same architectures."""

    pairs: list[tuple[float, float, str]]
    proxy_label: str
    reference_label: str
    source: Path
    note: str = ""  # which of a proxy-check's settings is shown, and where the others are


# ----- what proxy-check writes (the part the report shows) -----


class StudyPoint(BaseModel):
    index: int = Field(ge=0, description="the architecture's number in the study")
    proxy: float = Field(allow_inf_nan=False, description="its proxy score, mean over seeds")
    reference: float = Field(allow_inf_nan=False, description="its reference score, mean")


class StudySetting(BaseModel):
    setting: str = Field(description="the proxy setting's name, e.g. s200-rfid-n250-s20")
    label: str = Field(description="its words: run length, score, N and sampler steps")
    points: list[StudyPoint]


class ProxyCheckSummary(BaseModel):
    """`summary.json` of a proxy-check run folder; its other fields are ignored here."""

    reference_label: str = Field(description="the reference's score, e.g. FID[classifier]")
    reference_setting: str = Field(description="the reference recipe and its scoring, in words")
    settings: list[StudySetting] = Field(min_length=1)
    best: str | None = Field(None, description="the setting with the best Kendall tau")


# ----- pairs measured elsewhere -----


class ProxyPair(BaseModel):
    proxy: float = Field(allow_inf_nan=False, description="the proxy score of one architecture")
    reference: float = Field(allow_inf_nan=False, description="its reference score")
    label: str | int | None = None


class ProxyPairs(BaseModel):
    proxy_label: str = "proxy score"
    reference_label: str = "reference score"
    pairs: list[ProxyPair]


PAIRS_FIX = (
    "give a proxy-check run folder, or a list of pairs, each an object with numbers 'proxy' "
    "and 'reference' (and an optional 'label')"
)


def load_proxy_study(path: str | Path) -> ProxyStudy:
    """The study at `path`: a proxy-check run folder or its summary.json, or a file of pairs."""
    path = Path(path)
    file = path / SUMMARY_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise UserError(
            f"--proxy-check {str(path)!r} holds no {SUMMARY_FILE}: give a run folder that "
            "`diffnas proxy-check` wrote (an interrupted study writes it when `diffnas "
            "proxy-check --resume` finishes it), its summary.json, or a JSON file of pairs",
            field="proxy_check",
        )
    found = read_file(file, Any, "--proxy-check file", fix=PAIRS_FIX)  # JSON: which shape?
    if isinstance(found, dict) and "settings" in found:
        fix = f"run `diffnas proxy-check --resume {file.parent}` to write it again"
        summary = read_file(file, ProxyCheckSummary, "proxy-check summary", fix=fix, strict=False)
        return _from_summary(summary, file)
    model = ProxyPairs if isinstance(found, dict) else list[ProxyPair]
    data = read_file(file, model, "--proxy-check pairs", fix=PAIRS_FIX, strict=False)
    pairs = data if isinstance(data, ProxyPairs) else ProxyPairs(pairs=data)
    return ProxyStudy(
        pairs=[
            (p.proxy, p.reference, str(i if p.label is None else p.label))
            for i, p in enumerate(pairs.pairs)
        ],
        proxy_label=pairs.proxy_label,
        reference_label=pairs.reference_label,
        source=file,
    )


def _from_summary(summary: ProxyCheckSummary, file: Path) -> ProxyStudy:
    """The setting with the study's best tau (the first when no tau was defined)."""
    row = next((s for s in summary.settings if s.setting == summary.best), summary.settings[0])
    why = "the study's best Kendall τ" if row.setting == summary.best else "no τ was defined"
    note = (
        f"Shown: the proxy setting {row.label} ({why}); each point is an architecture's mean "
        f"over the seeds, so τ here is of the means. Every setting, with its τ per seed and "
        f"interval: {file.parent / SUMMARY_MD}."
    )
    return ProxyStudy(
        pairs=[(p.proxy, p.reference, str(p.index)) for p in row.points],
        proxy_label=f"proxy: {row.label}",
        reference_label=f"reference: {summary.reference_setting}",
        source=file.parent,
        note=note,
    )
