"""Progress of long steps: rich bars, plain lines off a terminal, nothing with --quiet; stdout untouched."""

from __future__ import annotations

import pytest
import torch

from diffnas import progress
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.sampling import sample_images
from tiny_models import tiny_unet


@pytest.fixture(autouse=True)
def automatic_mode():
    yield
    progress.set_mode(None)


def test_plain_mode_reports_the_outermost_end_on_stderr_only(capsys) -> None:
    progress.set_mode("plain")
    with progress.task("training proxy", total=10) as outer:
        with progress.task("sampling 4 images", total=3) as inner:
            inner.update(advance=3)
        outer.update(10, info="loss 0.5000")
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1  # the inner task's end is not reported
    assert lines[0].startswith("training proxy: 10/10, loss 0.5000 (done in ")


def test_plain_mode_logs_long_steps_at_an_interval(capsys, monkeypatch) -> None:
    progress.set_mode("plain")
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)  # every update is "30 s later"
    with progress.task("features (classifier)", total=4) as bar:
        for _ in range(4):
            bar.update(advance=1)
    lines = capsys.readouterr().err.splitlines()
    counts = [line.rsplit(" (", 1)[0] for line in lines]
    assert counts == [f"features (classifier): {k}/4" for k in (1, 2, 3, 4, 4)]
    assert lines[-1].rsplit(" (", 1)[1].startswith("done in ")


def test_quiet_prints_nothing(capsys) -> None:
    progress.set_quiet(True)
    assert progress.mode() == "quiet"
    with progress.task("training", total=2) as bar:
        bar.update(2, info="loss 1")
    assert capsys.readouterr() == ("", "")
    progress.set_quiet(False)
    assert progress.mode() in ("rich", "plain")


def test_rich_mode_nests_tasks_in_one_live_display(capsys) -> None:
    progress.set_mode("rich")
    with progress.task("round 1 trial 0", total=None):
        with progress.task("training proxy", total=5) as bar:
            bar.update(5, info="loss [0.1]")  # brackets are text, not markup
        with progress.task("sampling", total=2) as bar:
            bar.update(advance=2)
    assert progress._live is None and progress._open == 0  # the display is closed again
    err = capsys.readouterr().err
    assert "✓ round 1 trial 0" in err


def test_sampling_reports_its_progress(capsys) -> None:
    progress.set_mode("plain")
    model = tiny_unet()
    images = sample_images(model, DiffusionConfig.ddpm(), 3, steps=2, batch_size=2)
    assert images.shape[0] == 3 and images.dtype == torch.uint8
    # 2 batches x 2 steps
    assert capsys.readouterr().err.startswith("sampling 3 images: 4/4 (done in ")


def test_a_step_that_raises_says_it_stopped(capsys) -> None:
    progress.set_mode("plain")
    with pytest.raises(KeyboardInterrupt), progress.task("training proxy", total=10) as bar:
        bar.update(3)
        raise KeyboardInterrupt
    assert capsys.readouterr().err.startswith("training proxy: 3/10 (stopped after ")
    assert progress._open == 0
