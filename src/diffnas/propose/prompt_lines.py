"""The lines of a request's context that come from the search rather than the proposer: the
task line, the reference line, and the memory as the request sees it.

The search fills a `ProposalContext` (and a screener's `ScreenContext`) with these for every
request; the prompt templates (`diffnas.propose.prompt`) place them as `$task`, `$reference`
and the memory's lines. Each is a pure function of the space, the data, the score and the
latency check, so the same request gives the same prompt (and the same LLM record key).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.gate.check import LatencyCheck, latency_verdict, within_budget
from diffnas.gate.memory import TrialRecord
from diffnas.model.cost import measure_cost
from diffnas.space.references import get_reference
from diffnas.space.search_space import SearchSpace


def data_words(data: DataSpec) -> str:
    """The images in words for the task line: the dataset's kind ("digits"), or for an npz
    file its name ("npz file faces.npz")."""
    if data.kind == "npz":
        return f"npz file {Path(data.path or '').name}"
    return data.kind


def task_line(space: SearchSpace, score_name: str, data: str = "") -> str:
    """The task in one sentence: what the search designs, for which images, ranked how.
    `data` names the images (e.g. "digits"); the search passes its dataset (`data_words`)."""
    images = f"{data} images" if data else "images"
    return (
        f"Design the UNet denoiser of a diffusion model for {images}, "
        f"{space.image_size}x{space.image_size} pixels, {space.in_channels} channel(s), "
        f"{space.objective.upper()} objective. Candidates are ranked by {score_name} "
        "(lower is better) after a short training run."
    )


def reference_line(space: SearchSpace, latency: LatencyCheck | None = None) -> str:
    """The space's reference architecture, its size and its budget verdict in one sentence
    ("" when the space names no reference); with a latency objective, its measured latency."""
    if not space.reference:
        return ""
    ref = get_reference(space.reference)
    cost = measure_cost(ref)
    _, verdict, ms = within_budget(ref, cost, space.budget, latency)
    if ms is not None and latency is not None and latency.budget_ms is None:
        verdict += f"; {latency_verdict(ms, latency)[1]}"  # a latency objective
    return (
        f"Reference {space.reference}: {json.dumps(space.proposal_of(ref))}; "
        f"{cost.params_m:.2f} M params; {verdict}."
    )


def as_in_flight(record: TrialRecord) -> TrialRecord:
    """A finished trial as a request that did not see its outcome saw it: being evaluated."""
    if record.status in ("rejected", "screened-out", "pending", "running") or record.round < 0:
        return record
    return replace(
        record, status="running", score=None, reason="", scores=None, train=None,
        eval_dir=None, device=None, device_s=None, fidelity=None,
    )  # fmt: skip


def memory_as_seen(memory: list[TrialRecord], seen: Collection[int] | None) -> list[TrialRecord]:
    """The memory a request shows: every trial as it stands (`seen` None), or only the outcomes
    of the finished trials in `seen` (an asynchronous replay shows exactly what the recorded
    request saw; the others are "being evaluated")."""
    if seen is None:
        return memory
    return [t if t.number in seen else as_in_flight(t) for t in memory]
