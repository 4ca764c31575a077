"""Warm start (`--warm-start RUN ...`): earlier searches' measured trials seed a new search.

Every trial an earlier search of the *same space* measured (complete, scored on the whole
proxy run) is added to the new search's Optuna study as a COMPLETE trial with its score,
params and origin (`origin: "warm-start"`, `warm_start: {run, trial, data}`, round -1), before
the first request. Nothing is trained again: from there on it is memory like any other trial -
the LLM's prompt shows it, TPE and evolution draw on it, the GP screener learns from it, the
gate refuses to train its architecture again, and it may be promoted. Its compute belongs to
the earlier search and is not counted here.

A different dataset is allowed: such a trial is marked `measured_on: DATA` and the prompt says
"(measured on DATA)" next to its score. A different space is refused (every field but the name
and description must match: the same architectures must be allowed under the same budget),
and so is a different proxy score (RFID and KID values do not compare), before a run folder
exists. The import is idempotent: a resumed search adds only what is not there yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.gate.entry import ORIGIN_WARM_START
from diffnas.gate.memory import UNTRAINED
from diffnas.layout import STUDY_FILE
from diffnas.runs import load_options
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space import params as arch_params
from diffnas.space.search_space import SearchSpace, load_space

WARM_START_ROUND = -1  # imported trials belong to no round of this search
SPACE_LABELS = ("name", "description")  # the only fields two equal spaces may differ in


@dataclass(frozen=True)
class WarmSource:
    """An earlier search whose measured trials a warm start imports."""

    run_dir: Path
    config: SearchConfig
    data_label: str  # its dataset in words, e.g. "digits" or "npz:faces.npz, subset 500"
    same_data: bool  # measured on this search's data


def data_label(config: SearchConfig) -> str:
    parts = [config.data]
    if config.data_subset:
        parts.append(f"subset {config.data_subset}")
    if config.data_image_size:
        parts.append(f"resized to {config.data_image_size} px")
    return ", ".join(parts)


def space_differences(here: SearchSpace, there: SearchSpace) -> list[str]:
    """The fields two spaces differ in, each as `field (THERE there, HERE here)`."""
    a = here.model_dump(exclude=set(SPACE_LABELS))
    b = there.model_dump(exclude=set(SPACE_LABELS))
    return [f"{k} ({b[k]!r} there, {a[k]!r} here)" for k in a if a[k] != b[k]]


def check_sources(config: SearchConfig, space: SearchSpace, data: DataSpec) -> list[WarmSource]:
    """The `--warm-start` run folders, each checked: a search of this space with this proxy
    score, with a study to read; a `UserError` naming the folder and what differs otherwise."""
    sources = []
    for path in config.warm_start:
        run_dir = Path(path)
        if not run_dir.is_dir():
            raise UserError(
                f"--warm-start {path!r} is not a folder; give the run folder of an earlier search",
                field="warm_start",
            )
        source = load_options(run_dir, SearchConfig, kind="search", option="--warm-start")
        try:
            there = load_space(source.space)
        except UserError as err:
            raise UserError(
                f"--warm-start {path!r}: its space {source.space!r} cannot be read ({err})",
                field="warm_start",
            ) from None
        differences = space_differences(space, there)
        if differences:
            raise UserError(
                f"--warm-start {path!r} searched space {there.name!r}, this search space "
                f"{space.name!r}, and they differ in {'; '.join(differences)}; a warm start "
                "needs the same space (the same allowed values and budget)",
                field="warm_start",
            )
        label, here_label = source.proxy.score.label, config.proxy.score.label
        if label != here_label:
            raise UserError(
                f"--warm-start {path!r} ranked candidates by {label}, this search by "
                f"{here_label}; their scores do not compare (use --metric as there)",
                field="warm_start",
            )
        if source.storage is None and not (run_dir / STUDY_FILE).is_file():
            raise UserError(
                f"--warm-start {path!r} has no {STUDY_FILE}: that search never started",
                field="warm_start",
            )
        same = source.data_spec() == data
        sources.append(WarmSource(run_dir.resolve(), source, data_label(source), same))
    return sources


def _imported(study: optuna.Study) -> tuple[set[tuple[str, int]], set[str]]:
    """(the (run, trial) pairs already imported, the architectures already in the memory)."""
    done, archs = set(), set()
    for t in study.get_trials(deepcopy=False):
        origin = t.user_attrs.get("warm_start")
        if isinstance(origin, dict):
            done.add((str(origin.get("run")), int(origin.get("trial", -1))))
        if t.user_attrs.get("arch_hash") and t.user_attrs.get("status") not in UNTRAINED:
            archs.add(str(t.user_attrs["arch_hash"]))
    return done, archs


def import_trials(
    study: optuna.Study,
    space: SearchSpace,
    sources: list[WarmSource],
    cost_objective: str | None = None,
) -> int:
    """Add every measured trial of `sources` not imported yet; the number added. With a second
    objective (`cost_objective`: "latency" or "macs") a trial enters with [score, cost], and
    one measured without that cost (latency from a search that measured none) is left out."""
    done, archs = _imported(study)
    slot = sum(1 for t in study.get_trials(deepcopy=False) if "warm_start" in t.user_attrs)
    dists = arch_params.distributions(space)
    added = 0
    for source in sources:
        earlier = study_mod.open_study(
            source.run_dir,
            source.config.storage,
            study_name=source.config.study_name,
            read_only=True,
        )
        for record in study_mod.load_memory(earlier):
            if not record.evaluated or record.arch is None:
                continue
            run = str(source.run_dir)
            key = record.arch.arch_hash()
            params = arch_params.encode(space, record.arch, dists)
            if (run, record.number) in done or key in archs or params is None:
                continue  # imported, already measured here, or (a moved YAML) not in the space
            cost = record.cost(cost_objective) if cost_objective else None
            if cost_objective and cost is None:
                continue
            attrs: dict[str, Any] = {
                "round": WARM_START_ROUND, "slot": slot, "proposer": record.proposer,
                "origin": ORIGIN_WARM_START, "rationale": record.rationale[:500],
                "raw": json.dumps(space.proposal_of(record.arch)),
                "arch": record.arch.model_dump(), "arch_hash": key, "gmacs": record.gmacs,
                "params_m": record.params_m, "latency_ms": record.latency_ms,
                "score_name": record.score_name,
                "status": "complete", "scores": record.scores,
                "warm_start": {"run": run, "trial": record.number, "data": source.data_label},
                "measured_on": None if source.same_data else source.data_label,
            }  # fmt: skip
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.COMPLETE,
                    values=[record.score] if cost is None else [record.score, cost],
                    params=params,
                    distributions=dists,
                    user_attrs={k: v for k, v in attrs.items() if v is not None},
                )
            )
            done.add((run, record.number))
            archs.add(key)
            slot += 1
            added += 1
    return added
