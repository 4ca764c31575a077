"""A run folder written by an earlier release resumes, reports and exports with this code.

tests/fixtures/run-0.1.0 was written by diffnas 0.1.0 (tests/fixtures/make_release_run.py): a
scripted-LLM search of two rounds of two, interrupted after the first trial of round 2. Its
files are what a user has on disk; a change of the study's attributes, the round files or
the layout that cannot read them fails here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from diffnas.cli.main import run
from diffnas.report.source import load_search

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
# what 0.1.0 recorded: trials 0-2 scored (RFID, from each trials/NNNNN/result.json), trial 3
# proposed in round 2 but never trained
SCORED = {n: json.loads((FIXTURE / f"trials/{n:05d}/result.json").read_text()) for n in range(3)}


def diffnas(monkeypatch, *args: str) -> None:
    """Run the console script in-process; it must exit 0."""
    monkeypatch.setattr(sys, "argv", ["diffnas", "--quiet", *args])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code in (0, None)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("release") / FIXTURE.name
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_the_interrupted_folder_reads_as_it_was_left(interrupted) -> None:
    record = load_search(interrupted)
    by_number = {t.number: t for t in record.trials}
    assert sorted(by_number) == [0, 1, 2, 3]
    for n, result in SCORED.items():
        t = by_number[n]
        assert t.status == "complete" and t.score == pytest.approx(result["score"])
        assert t.origin == "llm" and t.by == "diffnas/llm"
        assert t.proxy is not None and t.proxy.label == "RFID[classifier]"
        assert t.eval_dir == f"trials/{n:05d}" and t.device == "cpu" and t.device_s > 0
    assert by_number[3].status in ("pending", "running") and by_number[3].score is None
    assert [t.round for t in record.trials] == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def resumed(interrupted) -> Path:
    calls = (interrupted / "llm" / "calls.jsonl").read_text()
    with pytest.MonkeyPatch.context() as mp:
        # the LLM's loopback server of 0.1.0 is gone: a resume must not need it
        diffnas(mp, "search", "--resume", str(interrupted))
    assert (interrupted / "llm" / "calls.jsonl").read_text() == calls
    return interrupted


def test_resume_trains_only_what_was_left_and_promotes(resumed) -> None:
    record = load_search(resumed)
    by_number = {t.number: t for t in record.trials}
    for n, result in SCORED.items():  # kept, not trained again
        assert by_number[n].score == pytest.approx(result["score"])
        assert json.loads((resumed / f"trials/{n:05d}/result.json").read_text()) == result
    assert by_number[3].status == "complete" and by_number[3].score is not None
    assert by_number[3].origin == "llm"
    best = min(by_number.values(), key=lambda t: t.score)
    assert record.summary["best_trial"] == best.number
    assert best.final is not None and best.final.label.startswith("FID")
    assert [t.number for t in record.trials if t.final is not None] == [best.number]


def test_report_and_export_of_the_resumed_folder(resumed, tmp_path, monkeypatch) -> None:
    from diffusers import DDPMPipeline

    diffnas(monkeypatch, "report", str(resumed), "--out", str(tmp_path / "report"))
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert all("diffnas/llm" in html and f">{n}<" in html for n in range(4))

    best = load_search(resumed).summary["best_trial"]
    diffnas(monkeypatch, "export", str(resumed), "--trial", str(best), "--out", str(tmp_path / "p"))
    pipe = DDPMPipeline.from_pretrained(tmp_path / "p")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 1) and torch.isfinite(torch.from_numpy(images)).all()
