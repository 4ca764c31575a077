"""Progress of long steps: rich bars, plain lines off a terminal, nothing with --quiet; stdout untouched."""

from __future__ import annotations

import time

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


def test_a_plain_line_comes_every_interval_even_without_updates(capsys, monkeypatch) -> None:
    """A search waiting on its workers' processes reports nothing itself: the timer writes
    the innermost step's line, with the steps around it, each interval."""
    progress.set_mode("plain")
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.3)
    monkeypatch.setattr(progress, "_TICK_S", 0.05)
    with (
        progress.task("round 1: proxy training and scoring 2"),
        progress.task("training proxy", total=100) as bar,
    ):
        bar.update(25, info="loss 0.5")
        time.sleep(1.0)  # no update meanwhile
    lines = capsys.readouterr().err.splitlines()
    timed = [line for line in lines if " > " in line]
    assert len(timed) >= 2  # about one per 0.3 s over 1 s
    assert timed[0].startswith("round 1: proxy training and scoring 2 > training proxy: 25/100")
    assert "ETA" in timed[0]
    assert progress._ticker is None  # the timer stops with the last plain task


def test_the_eta_is_the_rest_at_this_runs_rate(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    task = progress.Task("training", total=1000, completed=200, shown="quiet")
    clock[0] += 40.0
    task.update(400)  # 200 steps in 40 s (a resumed run's first 200 are not this run's)
    assert task.eta() == pytest.approx((1000 - 400) * 40.0 / 200)  # 120 s
    assert progress.duration(120.0) == "2 min 0 s"
    assert progress.duration(7384.0) == "2 h 3 min" and progress.duration(42.4) == "42 s"


def test_training_advances_its_bar_every_step(monkeypatch, tmp_path) -> None:
    """The bar's count follows every step, not only the log steps (every 100 by default)."""
    from diffnas.train.recipe import TrainRecipe
    from diffnas.train.trainer import train

    seen: list[int] = []
    original = progress.Task.update

    def record(self, completed=None, **kwargs):
        if self.description.startswith("training") and completed is not None:
            seen.append(completed)
        return original(self, completed, **kwargs)

    monkeypatch.setattr(progress.Task, "update", record)
    progress.set_mode("plain")
    recipe = TrainRecipe(steps=6, batch_size=2, warmup_steps=0, log_every=100, bf16_cpu=False)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    train(tiny_unet(), x, recipe=recipe, diffusion=DiffusionConfig.ddpm(), run_dir=tmp_path, seed=0)
    assert seen[:5] == [1, 2, 3, 4, 5] and seen[-1] == 6
