"""The report's two-objective parts: hypervolume against a closed form, per round and run."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffnas.report import plots
from diffnas.report.source import ScoreRow, SearchRecord, TrialRow
from test_search_loop import config


def test_hypervolume_is_the_area_the_points_dominate_up_to_the_reference() -> None:
    # three staircase steps of widths 1 and heights 1, 2, 3 up to (4, 4): 1 + 2 + 3
    front = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert plots.hypervolume(front, (4.0, 4.0)) == pytest.approx(6.0)
    # a dominated point and one beyond the reference add nothing; one point is a rectangle
    assert plots.hypervolume([*front, (3.0, 3.0), (5.0, 0.5)], (4.0, 4.0)) == pytest.approx(6.0)
    assert plots.hypervolume([(1.0, 1.0)], (4.0, 3.0)) == pytest.approx(6.0)
    assert plots.hypervolume([], (4.0, 4.0)) == 0.0


def row(number: int, rnd: int, score: float | None, ms: float | None) -> TrialRow:
    return TrialRow(
        number=number, round=rnd, slot=number, proposer="p", origin=None,
        status="complete" if score is not None else "rejected", reason="", rationale="",
        arch=None, raw=None, gmacs=0.05, params_m=1.0,
        proxy=ScoreRow(score, "RFID") if score is not None else None, final=None,
        device_s=1.0, final_device_s=None, samples=None, final_samples=None, latency_ms=ms,
    )  # fmt: skip


def record(name: str, trials: list[TrialRow]) -> SearchRecord:
    cfg = config(objectives="score,latency")
    return SearchRecord(Path(name), cfg, None, trials, {}, None)


def test_hypervolume_by_round_shares_one_reference_between_runs() -> None:
    a = record("a", [row(0, 0, 2.0, 2.0), row(1, 1, 1.0, 3.0), row(2, 1, None, 0.1)])
    b = record("b", [row(0, 0, 4.0, 1.0), row(1, 1, 3.0, 4.0)])
    found = plots.hypervolume_by_round([a, b], "latency")
    assert found is not None
    curves, reference = found
    assert reference == pytest.approx((4.4, 4.4))  # 10 % past the worst score and latency
    rs, rc = reference
    after_a = (rs - 2.0) * (rc - 2.0)
    both_a = after_a + (2.0 - 1.0) * (rc - 3.0)  # trial 1 adds the strip below score 2
    assert curves[0] == pytest.approx([after_a, both_a])
    b_first = (rs - 4.0) * (rc - 1.0)
    b_both = b_first + (4.0 - 3.0) * (rc - 4.0)
    assert curves[1] == pytest.approx([b_first, b_both])
    assert [t.number for t in a.front()] == [1, 0]  # the unscored trial is not on it
    assert plots.hypervolume_curves([a, b], "latency")[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[index]
