"""Samplers: shapes, determinism, model-call counts, and agreement with improved-diffusion.

Golden values come from running openai/improved-diffusion (github.com/openai/improved-diffusion,
commit 1bc7bbb) once, its numpy/torch code unchanged, in float64:
    d = SpacedDiffusion(use_timesteps=space_timesteps(1000, RESPACING),
                        betas=get_named_beta_schedule(SCHEDULE, 1000),
                        model_mean_type=ModelMeanType.EPSILON, model_var_type=VAR_TYPE,
                        loss_type=LossType.MSE)
    d.timestep_map, d.betas, d.posterior_log_variance_clipped
    d.ddim_sample(lambda x, t: EPS, X, th.tensor([i]), clip_denoised=CLIP)["sample"]
    d.p_mean_variance(lambda x, t: EPS, X, th.tensor([i]), clip_denoised=True)  # mean, log_variance
Only the numbers are kept here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.errors import UserError
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.sampling import (
    denoise_step,
    make_scheduler,
    respaced_timesteps,
    sample_images,
    save_grid,
    save_pngs,
)
from tiny_models import tiny_unet

SHORT_DDPM = DiffusionConfig(objective="ddpm", schedule="linear", timesteps=21)
SHORT_IDDPM = DiffusionConfig(objective="iddpm", schedule="cosine", timesteps=10, learn_sigma=True)

# The fixed inputs of every golden step: x_t and the fake model's ε (shape 1×2×2×2).
X = torch.linspace(-1.5, 1.5, 8, dtype=torch.float64).view(1, 2, 2, 2)
EPS = torch.tensor([0.9, -0.4, 1.7, -1.2, 0.3, 2.2, -2.0, 0.6], dtype=torch.float64).view(
    1, 2, 2, 2
)


def count_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(
    ("diffusion", "sampler", "steps"),
    [
        (SHORT_DDPM, "ddpm", None),
        (SHORT_DDPM, "ddim", 5),
        (SHORT_DDPM, "respaced", 5),
        (SHORT_IDDPM, "respaced", 5),
        (SHORT_IDDPM, "ddim", 4),
    ],
)
def test_samplers_return_deterministic_uint8_images(diffusion, sampler, steps):
    model = tiny_unet(3, diffusion.out_channels(3))
    kwargs = dict(sampler=sampler, steps=steps, batch_size=2)
    images = sample_images(model, diffusion, 3, seed=7, **kwargs)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images, sample_images(model, diffusion, 3, seed=7, **kwargs))
    assert not torch.equal(images, sample_images(model, diffusion, 3, seed=8, **kwargs))
    assert model.training  # mode restored


@pytest.mark.parametrize(
    ("sampler", "steps", "calls"), [("ddim", 4, 4), ("respaced", 6, 6), ("ddpm", None, 10)]
)
def test_sampler_calls_the_model_once_per_step_per_batch(sampler, steps, calls):
    model = tiny_unet(1, 2)
    counter = count_calls(model)
    sample_images(model, SHORT_IDDPM, 3, sampler=sampler, steps=steps, seed=0, batch_size=2)
    assert counter[0] == 2 * calls  # two batches (2 + 1 images)


# IDDPM's space_timesteps(T, "k"), sorted. (50, 25) and (100, 15) are where round(i·stride)
# would differ from IDDPM's accumulated index (24 for 25, 50 for 49).
IDDPM_SPACED = {
    (1000, 10): [0, 111, 222, 333, 444, 555, 666, 777, 888, 999],
    (1000, 25): [0, 42, 83, 125, 166, 208, 250, 291, 333, 375, 416, 458, 500, 541, 583, 624, 666,
                 708, 749, 791, 832, 874, 916, 957, 999],
    (100, 7): [0, 16, 33, 50, 66, 82, 99],
    (50, 25): [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
               45, 47, 49],
    (100, 15): [0, 7, 14, 21, 28, 35, 42, 49, 57, 64, 71, 78, 85, 92, 99],
}  # fmt: skip


@pytest.mark.parametrize(("num_timesteps", "steps"), sorted(IDDPM_SPACED))
def test_respaced_timesteps_are_iddpm_space_timesteps(num_timesteps, steps):
    expected = IDDPM_SPACED[(num_timesteps, steps)]
    assert respaced_timesteps(num_timesteps, steps) == expected[::-1]
    diffusion = DiffusionConfig(schedule="cosine", timesteps=num_timesteps)
    assert make_scheduler(diffusion, "respaced", steps).timesteps.tolist() == expected[::-1]


def test_ddim_timesteps_are_iddpm_ddim_spacing():
    # IDDPM's space_timesteps(1000, "ddim10") and (1000, "ddim50"): range(0, T, T/S).
    ddim10 = make_scheduler(DiffusionConfig.ddpm(), "ddim", 10).timesteps.tolist()
    assert ddim10 == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    ddim50 = make_scheduler(DiffusionConfig.ddpm(), "ddim", 50).timesteps.tolist()
    assert ddim50 == list(range(980, -1, -20))


# IDDPM's respaced β and clipped log β̃ (index = position among the kept steps, ascending t).
IDDPM_RESPACED = {
    ("linear", "10"): (
        [9.999999999998899e-05, 0.12630763785293664, 0.316843617791814, 0.4661190638395779,
         0.5830054944265768, 0.674480639045262, 0.7460297669786917, 0.8019625916556974,
         0.845663378408531, 0.8797882303918187],
        [-9.211031850608943, -9.211031850608943, -2.3093457915952444, -1.2880163783732177,
         -0.7806405286974392, -0.4921594711140638, -0.3261580023007162, -0.22956066043816006,
         -0.16947577123103189, -0.12836947168341922],
    ),
    ("cosine", "10"): (
        [4.128422482196914e-05, 0.03437319962435481, 0.09272172315302318, 0.15305104909083078,
         0.21933920677856933, 0.2971582214977926, 0.3957355748076439, 0.5325223841931968,
         0.7423681744235038, 0.9999999180234923],
        [-10.096189198827068, -10.096189198827068, -3.659545654663948, -2.610211753996415,
         -2.006163363534961, -1.556418768610834, -1.167387498319917, -0.7903266409342942,
         -0.39000196317065283, -0.03007543974324386],
    ),
}  # fmt: skip


def _log_variance(scheduler, t: int, v: float | None = None) -> float:
    """The scheduler's log σ²_t (for learned range: at the model's value v)."""
    predicted = None if v is None else torch.tensor(v, dtype=torch.float64)
    variance = scheduler._get_variance(t, predicted_variance=predicted).double()
    return float(variance if v is not None else variance.log())  # learned range is a log already


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respaced_variances_match_iddpm_spaced_diffusion(schedule):
    betas, log_posterior = map(np.array, IDDPM_RESPACED[(schedule, "10")])
    fixed = DiffusionConfig(schedule=schedule)
    learned = make_scheduler(
        DiffusionConfig(objective="iddpm", schedule=schedule, learn_sigma=True), "respaced", 10
    )
    large = make_scheduler(fixed, "respaced", 10)
    small = make_scheduler(
        fixed.model_copy(update={"ddpm_variance": "fixed_small"}), "respaced", 10
    )
    kept = learned.timesteps.tolist()
    # t = 0 is skipped: no noise is added there, by IDDPM or diffusers.
    for i, t in enumerate(kept[:-1]):
        j = len(kept) - 1 - i
        log_beta, log_beta_tilde = np.log(betas[j]), log_posterior[j]
        close = dict(rel=1e-4, abs=1e-4)
        # learned range: v = −1 → log β̃_t, v = 1 → log β_t, v = 0 → halfway
        assert _log_variance(learned, t, -1.0) == pytest.approx(log_beta_tilde, **close)
        assert _log_variance(learned, t, 1.0) == pytest.approx(log_beta, **close)
        halfway = (log_beta + log_beta_tilde) / 2
        assert _log_variance(learned, t, 0.0) == pytest.approx(halfway, **close)
        assert _log_variance(large, t) == pytest.approx(log_beta, **close)
        assert _log_variance(small, t) == pytest.approx(log_beta_tilde, **close)


# IDDPM's ddim_sample (η = 0), linear T = 1000, "ddim10", at kept steps t = 900, 500 and 0.
IDDPM_DDIM = {
    900: [-1.5214693668094317, -1.093163224564769, -0.6648570823201068, -0.19175520216921824,
          0.19175520216921804, 0.6200613444138805, 1.0931632245647689, 1.5214693668094317],
    500: [-1.581829516896056, -1.1810618779039306, -0.7802942389118053, -0.02124103907244579,
          0.15297866931612833, 0.422008678064571, 1.1810618779039304, 1.581829516896056],
    0: [-1.0, -1.0, -0.6598901025551771, -0.20229581770088004, 0.21129626760791445,
        0.6208881529580269, 1.0, 1.0],
}  # fmt: skip
# The same steps with clip_denoised=False: clipping x0 moves these samples by up to 3.7.
IDDPM_DDIM_NO_CLIP = {
    900: [-4.768843660524561, -1.9856430543788461, -3.8342284118908028, 1.1286361771526394,
          0.09742481322733154, -1.4787025464224097, 5.255139028725438, 2.7254086765579415],
}  # fmt: skip


@pytest.mark.parametrize("t", sorted(IDDPM_DDIM))
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_ddim_step_matches_iddpm_ddim_sample_with_clipping(t, learn_sigma):
    objective = "iddpm" if learn_sigma else "ddpm"
    diffusion = DiffusionConfig(objective=objective, schedule="linear", learn_sigma=learn_sigma)
    scheduler = make_scheduler(diffusion, "ddim", 10)
    output = torch.cat([EPS, torch.ones_like(EPS)], 1) if learn_sigma else EPS  # v is ignored
    x_prev = denoise_step(scheduler, output.float(), t, X.float())
    expected = torch.tensor(IDDPM_DDIM[t]).view(1, 2, 2, 2)
    torch.testing.assert_close(x_prev, expected, rtol=1e-5, atol=1e-5)
    if t in IDDPM_DDIM_NO_CLIP:  # the clip matters here, so the test tells the two apart
        assert (expected - torch.tensor(IDDPM_DDIM_NO_CLIP[t]).view(1, 2, 2, 2)).abs().max() > 1


# IDDPM's p_mean_variance (clip_denoised=True), linear T = 1000: (mean, log σ²) per kept t.
_MEAN_T0 = [-1.0, -1.0, -0.6598901025551771, -0.20229581770088004, 0.21129626760791445,
            0.6208881529580269, 1.0, 1.0]  # fmt: skip
IDDPM_P_SAMPLE = {
    ("1000", 999): ([-1.4850513863930246, -1.0607876621340568, -0.636523937875089,
                     -0.21200351064284678, 0.21200351064284656, 0.6362672349018144,
                     1.0607876621340566, 1.4850513863930246],
                    {"fixed_large": -3.9120230674743652, "fixed_small": -3.9120237827301025}),
    ("1000", 500): ([-1.4942145457025617, -1.0681698346577053, -0.6421251236128488,
                     -0.20996429847686432, 0.212213125850091, 0.6360090095217206,
                     1.068169834657705, 1.4942145457025617],
                    {"fixed_large": -4.599192142486572, "fixed_small": -4.60004997253418}),
    ("1000", 1): ([-1.2273542135953903, -1.0324791478259223, -0.6566438939711734,
                   -0.2045939531028021, 0.21187241181912086, 0.6251039062004576,
                   1.032479147825922, 1.2273542135953903],
                  {"fixed_large": -9.0286865234375, "fixed_small": -9.81672477722168}),
    ("1000", 0): (_MEAN_T0, {"fixed_large": -9.81672477722168, "fixed_small": -9.81672477722168}),
    ("10", 999): ([-0.5360408071428537, -0.38749225517468794, -0.23894370320652214,
                   -0.058153400729809526, 0.05815340072980946, 0.20670195269797528,
                   0.3874922551746878, 0.5360408071428537],
                  {"fixed_large": -0.128074049949646, "fixed_small": -0.12836946547031403}),
    ("10", 555): ([-1.032620221376419, -0.8110047961984361, -0.5893893710204534,
                   0.1461585206644875, 0.013002640291104303, 0.0754569045134953,
                   0.811004796198436, 1.032620221376419],
                  {"fixed_large": -0.39381229877471924, "fixed_small": -0.49215948581695557}),
    ("10", 111): ([-1.0003680947702378, -0.9942265000578577, -0.999734221325655,
                   0.22685446906503276, 0.11522570251438129, -0.14843869584934327,
                   1.0000511580479465, 1.0003680947702378],
                  {"fixed_large": -2.0690348148345947, "fixed_small": -9.211031913757324}),
    ("10", 0): (_MEAN_T0, {"fixed_large": -9.211031913757324, "fixed_small": -9.211031913757324}),
}  # fmt: skip


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize(("respacing", "t"), sorted(IDDPM_P_SAMPLE))
def test_ddpm_step_matches_iddpm_p_sample(variance, respacing, t):
    diffusion = DiffusionConfig(ddpm_variance=variance)
    sampler, steps = ("ddpm", None) if respacing == "1000" else ("respaced", int(respacing))
    scheduler = make_scheduler(diffusion, sampler, steps)
    mean, log_variances = IDDPM_P_SAMPLE[(respacing, t)]
    x_prev = denoise_step(scheduler, EPS.float(), t, X.float(), torch.Generator().manual_seed(3))
    noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(3))
    # x_{t−1} = mean + σ·z, with no noise at t = 0 (where IDDPM's fixed-large log σ² is log β̃_1,
    # used only by its likelihood, while diffusers holds β_0: no sample can tell them apart).
    sigma = math.exp(0.5 * log_variances[variance]) if t > 0 else 0.0
    expected = torch.tensor(mean).view(1, 2, 2, 2) + sigma * noise
    # diffusers works in float32: at t = 1, 1 − ᾱ_1 = 2.2e-4 keeps ~4 digits (5e-5 off, σ = 0.01)
    torch.testing.assert_close(x_prev, expected, rtol=1e-5, atol=1e-4)


def test_ddpm_variance_defaults_to_fixed_large():
    assert DiffusionConfig().ddpm_variance == DiffusionConfig.ddpm().ddpm_variance == "fixed_large"
    assert make_scheduler(DiffusionConfig(), "ddpm", None).config.variance_type == "fixed_large"
    assert make_scheduler(SHORT_IDDPM, "respaced", 5).config.variance_type == "learned_range"


def test_bad_arguments_raise_user_errors():
    model = tiny_unet(3, 3)
    with pytest.raises(UserError, match="sampler"):
        sample_images(model, SHORT_DDPM, 1, sampler="euler", steps=5)
    with pytest.raises(UserError, match="steps"):
        sample_images(model, SHORT_DDPM, 1, sampler="ddim", steps=None)
    with pytest.raises(UserError, match="steps"):
        sample_images(model, SHORT_DDPM, 1, sampler="ddpm", steps=5)
    with pytest.raises(UserError, match="out_channels"):
        sample_images(model, SHORT_IDDPM, 1, sampler="ddim", steps=2)


def test_png_helpers(tmp_path):
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    paths = save_pngs(images, tmp_path / "pngs")
    assert len(paths) == 5
    np.testing.assert_array_equal(
        np.array(Image.open(paths[2])), images[2].permute(1, 2, 0).numpy()
    )
    grid = save_grid(images, tmp_path / "grid.png")
    assert Image.open(grid).size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
