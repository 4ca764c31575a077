"""Compute of training and sampling a candidate, in FLOPs, from its MACs per forward pass.

FLOPs = 2 x MACs (as everywhere in diffnas). Training costs a forward and a backward pass,
about 3 forward passes, per image: 3 x 2 x MACs x steps x batch. Sampling costs one forward
pass per image per sampler step: 2 x MACs x N x S. Feature extraction and the Fréchet
distance are left out: they cost the same for every candidate.
"""

from __future__ import annotations

from diffnas.execute.job import ScoreSpec
from diffnas.execute.table import TableSetting
from diffnas.space.search_space import SearchSpace
from diffnas.train.diffusion import DiffusionConfig

FORWARD_PASSES_PER_TRAINING_IMAGE = 3  # forward + backward (the backward is ~2 forwards)


def training_flops(macs: float, steps: int, batch_size: int) -> float:
    """FLOPs of `steps` optimizer steps of `batch_size` images."""
    return FORWARD_PASSES_PER_TRAINING_IMAGE * 2.0 * macs * steps * batch_size


def sampling_flops(macs: float, num_samples: int, sampler_steps: int) -> float:
    """FLOPs of drawing `num_samples` images with `sampler_steps` denoiser calls each."""
    return 2.0 * macs * num_samples * sampler_steps


def sampler_steps(score: ScoreSpec, space: SearchSpace) -> int:
    """Denoiser calls per image: S, or every step of the schedule for ancestral DDPM."""
    if score.sampler == "ddpm" or score.steps is None:
        return DiffusionConfig.resolve(space.objective, space.learn_sigma).timesteps
    return score.steps


def setting_flops(setting: TableSetting, space: SearchSpace, macs: int) -> float:
    """What ranking one architecture by `setting` costs: its training run and its sampling."""
    flops = training_flops(macs, setting.steps, setting.batch_size)
    if setting.score.metric != "loss":
        flops += sampling_flops(
            macs, setting.score.num_samples, sampler_steps(setting.score, space)
        )
    return flops


def run_flops(settings: list[TableSetting], space: SearchSpace, macs: int) -> float:
    """What the table's runs of one architecture with one seed cost: each run trained once,
    sampled once per distinct (sampler, N, S)."""
    flops, runs, draws = 0.0, set(), set()
    for s in settings:
        run = (s.role, s.steps)
        if run not in runs:
            runs.add(run)
            flops += training_flops(macs, s.steps, s.batch_size)
        draw = (*run, s.score.sampler, s.score.num_samples, s.score.steps)
        if s.score.metric != "loss" and draw not in draws:
            draws.add(draw)
            flops += sampling_flops(macs, s.score.num_samples, sampler_steps(s.score, space))
    return flops
