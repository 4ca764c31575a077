"""A search's evaluation trains with the recipe resolved for the device it runs on."""

from __future__ import annotations

import pytest
import torch

import cpuinfo_samples
from cpuinfo_samples import use_cpuinfo
from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute import job as candidate
from diffnas.execute.job import EvalJob, EvalSpec
from diffnas.model.builder import build_unet
from diffnas.space.arch import parse_arch
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.trainer import train
from tiny_models import TINY_JOB_ARCH, TINY_JOB_SPEC


def test_spec_resolves_for_its_own_device(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.ZEN4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("auto", "cpu"):  # "auto" on a machine without CUDA is the CPU
        recipe = EvalSpec(device=device).train_recipe("ddpm", "digits")
        assert recipe.channels_last is False and recipe.bf16_cpu is True
        assert recipe.random_hflip is False
    assert EvalSpec(device="cuda").train_recipe("ddpm", "cifar10").channels_last is True
    cuda = EvalSpec(device="cpu").train_recipe("ddpm", "cifar10", device_type="cuda")
    assert cuda.channels_last is True and cuda.random_hflip is True  # natural images flip
    with pytest.raises(UserError, match="device 'tpu' is unknown"):
        EvalSpec(device="tpu").train_recipe("ddpm", "digits")


class _Stop(Exception):
    pass


def test_evaluation_on_cpu_trains_without_channels_last(monkeypatch, tmp_path) -> None:
    use_cpuinfo(monkeypatch, tmp_path, cpuinfo_samples.CASCADE_LAKE)
    seen = {}

    def fake_train(model, images, *, recipe, device, **kwargs):
        seen.update(recipe=recipe, device=device)
        raise _Stop  # the recipe is all this test needs

    monkeypatch.setattr(candidate, "train", fake_train)
    arch = parse_arch({"image_size": 16, "in_channels": 1, "base_channels": 8, "channel_mult": [1],
                       "num_res_blocks": 1, "attention_resolutions": [], "mid_attention": False,
                       "norm_groups": 8})  # fmt: skip
    spec = EvalSpec(device="cpu")
    job = EvalJob(arch=arch, objective="ddpm", data=DataSpec(kind="digits", subset=16),
                  spec=spec, recipe=spec.train_recipe("ddpm", "digits"), seed=0,
                  workdir=str(tmp_path / "job"), cache_dir=str(tmp_path / "cache"))  # fmt: skip
    result = candidate.evaluate_candidate(job)
    assert result.status == "failed" and "_Stop" in (result.error or "")
    recipe = seen["recipe"]
    assert recipe == job.recipe  # the job's resolved recipe, not resolved again
    assert seen["device"].type == "cpu"
    assert recipe.channels_last is False and recipe.bf16_cpu is False
    assert recipe.random_hflip is False  # digits: from resolve_recipe, not patched afterwards


def test_loss_metric_scores_the_mean_loss_of_the_last_tenth_without_sampling(tmp_path) -> None:
    spec = TINY_JOB_SPEC.model_copy(
        update={
            "recipe_overrides": {**TINY_JOB_SPEC.recipe_overrides, "steps": 20},
            "score": TINY_JOB_SPEC.score.model_copy(update={"metric": "loss"}),
        }
    )
    recipe = spec.train_recipe("ddpm", "digits")
    assert recipe.log_every == 2  # a tenth of the run
    data = DataSpec(kind="digits", subset=64)
    job = EvalJob(
        arch=TINY_JOB_ARCH, objective="ddpm", data=data, spec=spec, recipe=recipe, seed=5,
        workdir=str(tmp_path / "job"), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    result = candidate.evaluate_candidate(job)
    assert result.status == "complete" and spec.score.label == "training loss"
    assert result.scores["loss"]["label"] == "training loss"
    assert not (tmp_path / "job" / "samples.png").exists()  # nothing was sampled
    # the same run again, every step's loss seen: the score is the mean of the last two
    losses: list[float] = []
    torch.manual_seed(job.seed)
    train(
        build_unet(TINY_JOB_ARCH), candidate.load_images(data).x, recipe=recipe,
        diffusion=DiffusionConfig.resolve("ddpm", False), run_dir=tmp_path / "again", seed=5,
        on_step=lambda step, loss: losses.append(float(loss)), progress=False,
    )  # fmt: skip
    assert result.score == pytest.approx(sum(losses[-2:]) / 2, rel=1e-5)


def test_extra_scores_come_from_the_same_checkpoint_and_samples(tmp_path) -> None:
    """One training, several scores: a protocol that samples like the main one reuses its
    samples (the same value bit for bit), another N draws its own set - the value a job with
    that protocol as its main score gets - and the loss is the run's own."""
    main = TINY_JOB_SPEC.score
    more_samples = main.model_copy(update={"num_samples": 12})
    kid = main.model_copy(update={"metric": "kid"})
    loss = main.model_copy(update={"metric": "loss"})

    def job(spec_score, workdir, extra=None) -> EvalJob:
        spec = TINY_JOB_SPEC.model_copy(update={"score": spec_score})
        return EvalJob(
            arch=TINY_JOB_ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64),
            spec=spec, recipe=spec.train_recipe("ddpm", "digits"), seed=2,
            workdir=str(tmp_path / workdir), cache_dir=str(tmp_path / "cache"),
            extra_scores=extra or {},
        )  # fmt: skip

    extras = {"same": main, "n12": more_samples, "kid": kid, "loss": loss}
    result = candidate.evaluate_candidate(job(main, "all", extras))
    assert result.status == "complete"
    assert result.extra_scores["same"]["value"] == result.score
    assert result.extra_scores["loss"]["value"] == result.train["last_loss"]
    alone = candidate.evaluate_candidate(job(more_samples, "alone"))
    assert result.extra_scores["n12"]["value"] == alone.score
    assert result.extra_scores["n12"]["protocol"]["num_generated"] == 12
    assert result.extra_scores["kid"]["protocol"]["metric"] == "kid"
    # what each phase cost: training, and each score's own sampling and scoring
    phases = result.phase_device_s
    assert set(phases) == {"train", "score", *extras} and phases["loss"] == 0.0
    assert all(v >= 0 for v in phases.values()) and phases["train"] > 0
    with pytest.raises(ValueError, match="extra score names"):
        job(main, "bad", {"train": main})
