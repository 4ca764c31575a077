"""Trainer: loss falls, bit-exact resume, divergence/OOM handling, checkpoints, recipes."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DModel
from pydantic import ValidationError
from sklearn.datasets import load_digits

from diffnas.errors import UserError
from diffnas.runs import read_json, read_jsonl
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.recipe import TrainRecipe
from diffnas.train.trainer import batch_indices, load_checkpoint, restore_ema, train
from tiny_models import tiny_unet


def digits(n: int = 64) -> torch.Tensor:
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32)
    return (images / 16.0 * 2.0 - 1.0)[:, None]


def quick_recipe(**overrides) -> TrainRecipe:
    settings = dict(
        steps=40, batch_size=16, lr=2e-3, warmup_steps=5, log_every=10, checkpoint_every=20,
        random_hflip=False, channels_last=False,
    )  # fmt: skip
    settings = {**settings, **overrides}
    settings["warmup_steps"] = min(settings["warmup_steps"], settings["steps"])
    return TrainRecipe.proxy(**settings)


def test_loss_falls_on_digits(tmp_path):
    result = train(
        tiny_unet(), digits(), recipe=quick_recipe(), diffusion=DiffusionConfig.ddpm(),
        run_dir=tmp_path, seed=0, progress=False,
    )  # fmt: skip
    assert result.status == "complete" and result.steps == 40
    losses = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 4
    assert losses[-1] < 0.5 * losses[0]
    assert result.images_per_sec > 0 and math.isfinite(result.last_loss)
    assert read_json(tmp_path / "status.json")["status"] == "complete"


def state_of(run_dir) -> dict:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return {"model": state["model"], "ema": state["ema_model"], "opt": state["optimizer"]["state"]}


def assert_bit_equal(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_bit_equal(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("diffusion", [DiffusionConfig.ddpm(), DiffusionConfig(
    objective="iddpm", schedule="cosine", timesteps=4, learn_sigma=True, timestep_sampler="importance")])  # fmt: skip
def test_resume_is_bit_exact(tmp_path, diffusion):
    # Dropout, flips, epochs that straddle batches (20 images, batch 8), warm-up + cosine,
    # channels-last and (second case) the importance sampler's history all have to resume.
    recipe = quick_recipe(steps=8, batch_size=8, warmup_steps=2, checkpoint_every=3,
                          random_hflip=True, channels_last=True)  # fmt: skip
    images = digits(20)
    out = diffusion.out_channels(1)
    kwargs = dict(recipe=recipe, diffusion=diffusion, seed=3, progress=False)
    full = train(tiny_unet(out_channels=out, dropout=0.1), images, run_dir=tmp_path / "a", **kwargs)
    first = train(
        tiny_unet(out_channels=out, dropout=0.1),
        images,
        run_dir=tmp_path / "b",
        max_steps=5,
        **kwargs,
    )
    assert first.status == "paused" and first.steps == 5
    torch.manual_seed(1234)  # the caller's RNG state must not matter
    second = train(
        tiny_unet(out_channels=out, dropout=0.1, seed=9), images, run_dir=tmp_path / "b", **kwargs
    )
    assert full.status == second.status == "complete" and second.steps == 8
    assert_bit_equal(state_of(tmp_path / "a"), state_of(tmp_path / "b"))
    events = [r.get("event") for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")]
    assert events.count("resume") == 1


def test_resume_with_other_settings_is_refused(tmp_path):
    kwargs = dict(diffusion=DiffusionConfig.ddpm(), seed=0, progress=False, run_dir=tmp_path)
    train(tiny_unet(), digits(16), recipe=quick_recipe(steps=2), max_steps=1, **kwargs)
    with pytest.raises(UserError, match="lr"):
        train(tiny_unet(), digits(16), recipe=quick_recipe(steps=2, lr=1e-3), **kwargs)
    # Logging cadence does not change the numbers, so it may differ.
    result = train(tiny_unet(), digits(16), recipe=quick_recipe(steps=2, log_every=1), **kwargs)
    assert result.status == "complete"


def test_nan_loss_ends_as_diverged_with_the_run_folder_intact(tmp_path):
    model = tiny_unet()

    def poison(step: int, loss: torch.Tensor) -> None:
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    recipe = quick_recipe(steps=10, log_every=1, checkpoint_every=2)
    result = train(model, digits(32), recipe=recipe, diffusion=DiffusionConfig.ddpm(),
                   run_dir=tmp_path, seed=0, on_step=poison, progress=False)  # fmt: skip
    assert result.status == "diverged" and result.steps == 4
    status = read_json(tmp_path / "status.json")
    assert status["status"] == "diverged" and "non-finite" in status["error"]
    records = list(read_jsonl(tmp_path / "metrics.jsonl"))
    assert records[-1]["event"] == "diverged"
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 2  # the last good one; step 4 was not saved
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_nan_in_the_images_also_diverges(tmp_path):
    images = digits(16)
    images[3, 0, 2, 2] = float("nan")
    recipe = quick_recipe(steps=4, batch_size=16, log_every=2)
    result = train(tiny_unet(), images, recipe=recipe, diffusion=DiffusionConfig.ddpm(),
                   run_dir=tmp_path, seed=0, progress=False)  # fmt: skip
    assert result.status == "diverged" and result.checkpoint is None


def test_cuda_oom_is_reported_not_raised(tmp_path):
    def out_of_memory(step: int, loss: torch.Tensor) -> None:
        if step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    result = train(tiny_unet(), digits(16), recipe=quick_recipe(steps=5, checkpoint_every=1),
                   diffusion=DiffusionConfig.ddpm(), run_dir=tmp_path, seed=0,
                   on_step=out_of_memory, progress=False)  # fmt: skip
    assert result.status == "oom" and "out of memory" in result.error
    assert read_json(tmp_path / "status.json")["status"] == "oom"
    assert list(read_jsonl(tmp_path / "metrics.jsonl"))[-1]["event"] == "oom"
    assert load_checkpoint(result.checkpoint)["step"] == 1


def test_checkpoint_carries_metadata_and_ema_weights(tmp_path):
    model = tiny_unet(out_channels=2)
    recipe = quick_recipe(steps=3, ema_decay=0.5, ema_warmup=False)
    meta = {"arch_name": "tiny", "dataset": "digits"}  # no architecture: the diffusers config
    result = train(model, digits(16), recipe=recipe, diffusion=DiffusionConfig.iddpm(),
                   run_dir=tmp_path, seed=0, metadata=meta, progress=False)  # fmt: skip
    ema_file = load_checkpoint(result.ema_checkpoint)
    assert ema_file["metadata"] == meta and ema_file["diffusion"]["learn_sigma"] is True
    rebuilt = UNet2DModel.from_config(ema_file["model_config"])

    restore_ema(rebuilt, result.ema_checkpoint)
    trained = dict(model.named_parameters())
    ema = dict(rebuilt.named_parameters())
    # EMA (decay 0.5, no warm-up) lags behind the trained weights but is not the init.
    init = dict(tiny_unet(out_channels=2).named_parameters())
    name = "conv_in.weight"
    assert not torch.equal(ema[name], trained[name]) and not torch.equal(ema[name], init[name])
    assert load_checkpoint(result.checkpoint)["metadata"] == meta
    with pytest.raises(UserError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bad_inputs_raise_user_errors(tmp_path):
    kwargs = dict(recipe=quick_recipe(), seed=0, run_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="images"):
        train(tiny_unet(), torch.zeros(4, 3, 8, 8), diffusion=DiffusionConfig.ddpm(), **kwargs)
    with pytest.raises(UserError, match="out_channels"):
        train(tiny_unet(), digits(4), diffusion=DiffusionConfig.iddpm(), **kwargs)


def test_data_order_is_a_function_of_seed_and_epoch():
    n, batch = 10, 4
    order = torch.cat([batch_indices(5, s, batch, n) for s in range(5)])  # two epochs exactly
    assert sorted(order[:10].tolist()) == list(range(10))
    assert sorted(order[10:].tolist()) == list(range(10))
    assert not torch.equal(order[:10], order[10:])
    assert torch.equal(batch_indices(5, 3, batch, n), order[12:16])
    assert not torch.equal(batch_indices(6, 0, batch, n), order[:4])


def test_recipes():
    ddpm, iddpm, proxy = TrainRecipe.full_ddpm(), TrainRecipe.full_iddpm(), TrainRecipe.proxy()
    assert (ddpm.lr, ddpm.batch_size, ddpm.steps, ddpm.warmup_steps, ddpm.grad_clip) == (
        2e-4, 128, 800_000, 5000, 1.0)  # fmt: skip
    assert (iddpm.lr, iddpm.steps, iddpm.dropout, iddpm.ema_decay) == (1e-4, 500_000, 0.3, 0.9999)
    assert TrainRecipe.full("iddpm") == iddpm
    assert proxy.steps <= 0.05 * ddpm.steps and proxy.lr > ddpm.lr
    # Linear warm-up to the peak, cosine down to min_lr_ratio·lr.
    assert proxy.lr_at(0) == pytest.approx(proxy.lr / proxy.warmup_steps)
    assert proxy.lr_at(proxy.warmup_steps - 1) == pytest.approx(proxy.lr)
    assert proxy.lr_at(proxy.steps - 1) == pytest.approx(proxy.lr * proxy.min_lr_ratio, rel=1e-3)
    middle = (proxy.steps + proxy.warmup_steps) // 2
    assert proxy.lr_at(middle) == pytest.approx(proxy.lr * (1 + proxy.min_lr_ratio) / 2, rel=1e-3)
    assert ddpm.lr_at(700_000) == ddpm.lr
    with pytest.raises(ValidationError, match="warmup_steps"):
        TrainRecipe(steps=10, warmup_steps=20)
    with pytest.raises(ValidationError):
        TrainRecipe(learning_rate=1e-3)  # unknown knob


def test_ema_decay_warms_up(tmp_path):
    recipe = quick_recipe(steps=4, log_every=1, ema_decay=0.9999)
    train(tiny_unet(), digits(16), recipe=recipe, diffusion=DiffusionConfig.ddpm(),
          run_dir=tmp_path, seed=0, progress=False)  # fmt: skip
    decays = [r["ema_decay"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "ema_decay" in r]
    # diffusers' EMAModel: the first update copies the weights, then (1 + s) / (10 + s).
    assert decays == pytest.approx([0.0] + [(1 + s) / (10 + s) for s in range(1, 4)])


def test_a_kill_between_the_two_files_of_the_last_save_resumes_to_the_same_ema(
    tmp_path, monkeypatch
):
    """The last save writes ema.pt and checkpoint.pt; a kill between them must not leave a
    finished checkpoint beside a missing ema.pt (seen: the resumed job found no EMA to score)."""
    from diffnas.train import trainer as trainer_mod

    recipe = quick_recipe(steps=4, batch_size=8, checkpoint_every=100)  # one save: the last
    kwargs = dict(recipe=recipe, diffusion=DiffusionConfig.ddpm(), seed=2, progress=False)
    train(tiny_unet(), digits(16), run_dir=tmp_path / "whole", **kwargs)
    expected = load_checkpoint(tmp_path / "whole" / "ema.pt")["ema_model"]

    real_save, written = trainer_mod.save_atomic, []

    def killed_after_the_first_file(obj, path):
        if written:
            raise KeyboardInterrupt  # the kill, after the first file of the save
        real_save(obj, path)
        written.append(path.name)

    monkeypatch.setattr(trainer_mod, "save_atomic", killed_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_unet(), digits(16), run_dir=tmp_path / "killed", **kwargs)
    monkeypatch.undo()
    resumed = train(tiny_unet(), digits(16), run_dir=tmp_path / "killed", **kwargs)
    assert resumed.status == "complete" and resumed.ema_checkpoint is not None
    assert_bit_equal(load_checkpoint(resumed.ema_checkpoint)["ema_model"], expected)

    # a folder an older diffnas left that way (checkpoint.pt, no ema.pt) gets its ema.pt back
    (tmp_path / "whole" / "ema.pt").unlink()
    again = train(tiny_unet(), digits(16), run_dir=tmp_path / "whole", **kwargs)
    assert again.ema_checkpoint is not None
    assert_bit_equal(load_checkpoint(again.ema_checkpoint)["ema_model"], expected)
