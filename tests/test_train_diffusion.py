"""Diffusion objectives: schedules, closed-form VLB terms, hybrid loss, timestep samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from pydantic import ValidationError

from diffnas.train.diffusion import (
    DiffusionConfig,
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
)
from diffnas.train.timestep_sampler import (
    LossSecondMomentSampler,
    UniformSampler,
    make_timestep_sampler,
)


def test_presets_match_the_papers():
    ddpm, iddpm = DiffusionConfig.ddpm(), DiffusionConfig.iddpm()
    assert (ddpm.schedule, ddpm.timesteps, ddpm.learn_sigma) == ("linear", 1000, False)
    assert (iddpm.schedule, iddpm.timesteps, iddpm.learn_sigma) == ("cosine", 1000, True)
    assert iddpm.vlb_weight == 0.001
    assert ddpm.out_channels(3) == 3 and iddpm.out_channels(3) == 6
    betas = ddpm.betas()
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    # IDDPM cosine: ᾱ_t = cos²((t/T + s)/(1 + s)·π/2) / cos²(s/(1+s)·π/2), s = 0.008.
    ac = np.cumprod(1 - iddpm.betas())
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert ac[499] == pytest.approx(f(500) / f(0), rel=1e-4)


# IDDPM's get_named_beta_schedule("linear", T) (openai/improved-diffusion 1bc7bbb, run once):
# β_1, β_T, ᾱ_T and ᾱ_{T/2}, float64.
IDDPM_LINEAR = {
    100: (0.001, 0.2, 2.039008975564078e-05, 0.07419699671742),
    4000: (2.5e-05, 0.005, 4.246652275802249e-05, 0.07894487332460011),
    1000: (0.0001, 0.02, 4.035829765375676e-05, None),
}


@pytest.mark.parametrize("timesteps", sorted(IDDPM_LINEAR))
def test_linear_schedule_is_rescaled_by_1000_over_t_like_iddpm(timesteps):
    first, last, abar_end, abar_mid = IDDPM_LINEAR[timesteps]
    config = DiffusionConfig(schedule="linear", timesteps=timesteps)
    betas = config.betas()
    ac = np.cumprod(1 - betas)
    assert betas[0] == pytest.approx(first, rel=1e-6)
    assert betas[-1] == pytest.approx(last, rel=1e-6)
    assert ac[-1] == pytest.approx(abar_end, rel=1e-3)  # ≈ 0 for every T: x_T is noise
    if abar_mid is not None:
        assert ac[timesteps // 2 - 1] == pytest.approx(abar_mid, rel=1e-4)
    # the training side (GaussianDiffusion) and the samplers (diffusers) use the same β
    scheduler = DDPMScheduler(**config.scheduler_kwargs())
    gd = GaussianDiffusion(config)
    torch.testing.assert_close(gd.alphas_cumprod, scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_linear_schedule_needs_more_than_20_steps():
    # β_T = 0.02·1000/T reaches 1 at T = 20 (ᾱ_T = 0); the cosine schedule has no such bound.
    with pytest.raises(ValidationError, match="timesteps"):
        DiffusionConfig(schedule="linear", timesteps=20)
    assert DiffusionConfig(schedule="linear", timesteps=21).betas()[-1] < 1
    assert DiffusionConfig(schedule="cosine", timesteps=4).timesteps == 4


def test_invalid_configs_are_rejected():
    with pytest.raises(ValidationError, match="learn_sigma"):
        DiffusionConfig(objective="ddpm", learn_sigma=True)
    with pytest.raises(ValidationError):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(ValidationError):
        DiffusionConfig(timestep_sampler="lossaware")


def test_q_sample_matches_diffusers_add_noise():
    config = DiffusionConfig.iddpm()
    gd = GaussianDiffusion(config)
    x0, noise = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    t = torch.tensor([0, 10, 500, 900, 999])
    expected = DDPMScheduler(**config.scheduler_kwargs()).add_noise(x0, noise, t)
    torch.testing.assert_close(gd.q_sample(x0, t, noise), expected, rtol=1e-5, atol=1e-5)


def test_normal_kl_matches_the_closed_form():
    m1, lv1 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.0, math.log(4.0), -1.0])
    m2, lv2 = torch.tensor([0.0, 0.0, 0.5]), torch.tensor([0.0, 0.0, 0.3])
    p = torch.distributions.Normal(m1, (0.5 * lv1).exp())
    q = torch.distributions.Normal(m2, (0.5 * lv2).exp())
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), torch.distributions.kl_divergence(p, q))
    assert normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-7


def test_discretized_likelihood_is_a_distribution_over_256_bins():
    bins = torch.linspace(-1, 1, 256)
    mean, log_scale = torch.tensor(0.3), torch.tensor(math.log(0.2))
    log_p = discretized_gaussian_log_likelihood(bins, mean, log_scale)
    assert log_p.exp().sum() == pytest.approx(1.0, abs=2e-3)
    # An interior bin: Φ((x+1/255−μ)/σ) − Φ((x−1/255−μ)/σ) (tanh approximation, ~1e-3).
    normal = torch.distributions.Normal(0.3, 0.2)
    x = bins[140]
    exact = normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255)
    assert log_p[140].exp() == pytest.approx(float(exact), rel=2e-3)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vlb_is_zero_when_the_model_predicts_the_true_posterior(schedule):
    config = DiffusionConfig(objective="iddpm", schedule=schedule, learn_sigma=True)
    gd = GaussianDiffusion(config)
    torch.manual_seed(0)
    x0 = torch.rand(6, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 2, 50, 400, 800, 999])
    x_t = gd.q_sample(x0, t, noise)
    # ε = the true noise gives the true posterior mean; v = −1 gives log σ² = log β̃_t.
    vb = gd.vb_terms_bpd(noise, -torch.ones_like(x0), x0, x_t, t)
    assert vb.abs().max() < 1e-3
    # Another variance costs bits where β_t and β̃_t differ (small t); the KL is never negative.
    worse = gd.vb_terms_bpd(noise, torch.ones_like(x0), x0, x_t, t)
    assert (worse[:2] > 1e-2).all() and (worse > -1e-6).all()


def test_vlb_at_t0_is_the_decoder_nll_in_bits_per_dim():
    config = DiffusionConfig.iddpm()
    gd = GaussianDiffusion(config)
    x0 = torch.full((1, 1, 2, 2), 0.5)
    t = torch.zeros(1, dtype=torch.long)
    noise = torch.zeros_like(x0)
    x_t = gd.q_sample(x0, t, noise)
    vb = gd.vb_terms_bpd(noise, -torch.ones_like(x0), x0, x_t, t)
    mean, log_var = gd.p_mean_log_variance(noise, -torch.ones_like(x0), x_t, t)
    normal = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p_bin = normal.cdf(x0 + 1 / 255) - normal.cdf(x0 - 1 / 255)
    expected = -p_bin.log2().mean()
    assert float(vb) == pytest.approx(float(expected), rel=5e-3)


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean():
    config = DiffusionConfig.iddpm()
    gd = GaussianDiffusion(config)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 3, 300, 900])
    x_t = gd.q_sample(x0, t, noise)
    output = torch.randn(4, 6, 8, 8, requires_grad=True)
    terms = gd.loss_terms(output, x0, x_t, t, noise)
    (grad,) = torch.autograd.grad(terms["vb"].sum(), output)
    assert grad[:, :3].abs().max() == 0  # mean channels: stop-gradient
    assert grad[:, 3:].abs().max() > 0  # variance channels learn from the VLB
    plain = gd.vb_terms_bpd(output[:, :3].detach(), output[:, 3:].detach(), x0, x_t, t)
    torch.testing.assert_close(terms["vb"], plain * 0.001 * 1000)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])


def test_ddpm_loss_is_the_epsilon_mse_and_checks_channels():
    gd = GaussianDiffusion(DiffusionConfig.ddpm())
    x0, noise = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    t = torch.tensor([5, 6])
    terms = gd.loss_terms(torch.zeros(2, 1, 4, 4), x0, x0, t, noise)
    assert set(terms) == {"mse", "loss"}
    torch.testing.assert_close(terms["loss"], torch.ones(2))
    with pytest.raises(ValueError, match="output channels"):
        gd.loss_terms(torch.zeros(2, 2, 4, 4), x0, x0, t, noise)


def test_uniform_sampler_draws_every_timestep_with_unit_weight():
    sampler = make_timestep_sampler(DiffusionConfig.ddpm())
    assert type(sampler) is UniformSampler
    t, w = sampler.sample(4000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999 and len(t.unique()) > 950
    assert (w == 1).all()


def test_importance_sampler_follows_the_loss_second_moment():
    sampler = LossSecondMomentSampler(num_timesteps=4, history=3)
    gen = torch.Generator().manual_seed(0)
    assert np.allclose(sampler.probabilities(), 0.25)  # uniform until warm
    for _ in range(3):
        sampler.update(torch.arange(4), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    p = sampler.probabilities()
    expected = np.array([1, 1, 2, 4]) / 8 * 0.999 + 0.001 / 4
    assert np.allclose(p, expected)
    t, w = sampler.sample(20000, torch.device("cpu"), gen)
    counts = torch.bincount(t, minlength=4).double() / len(t)
    assert torch.allclose(counts, torch.tensor(expected), atol=0.01)
    # Weights 1/(T·p) keep the estimate of the uniform mean unbiased.
    torch.testing.assert_close(w, 1 / (4 * torch.tensor(expected, dtype=torch.float32)[t]))
    state = sampler.state_dict()
    other = LossSecondMomentSampler(num_timesteps=4, history=3)
    other.load_state_dict(state)
    assert np.allclose(other.probabilities(), p)
