"""Timestep samplers of training: uniform, or IDDPM's loss-aware importance sampling.

After openai/improved-diffusion `resample.py`. A sampler draws the timesteps of a batch with
their loss weights and, being part of what a checkpoint resumes, carries a state dict.
"""

from __future__ import annotations

import numpy as np
import torch

from diffnas.train.diffusion import DiffusionConfig


class UniformSampler:
    """Timesteps uniform on {0..T-1}, all weights 1."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = num_timesteps

    def sample(
        self, batch_size: int, device: torch.device, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.randint(0, self.num_timesteps, (batch_size,), device=device, generator=generator)
        return t, torch.ones(batch_size, device=device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform sampling learns nothing from losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossSecondMomentSampler(UniformSampler):
    """IDDPM's importance sampler: p(t) ∝ sqrt(E[L_t²]) over the last `history` losses per t.

    Uniform until every t has `history` losses; a `uniform_prob` share of uniform mass keeps
    every t reachable. Weights 1/(T·p(t)) keep the loss unbiased.
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        self.history = history
        self.uniform_prob = uniform_prob
        self.loss_history = np.zeros((num_timesteps, history), dtype=np.float64)
        self.loss_counts = np.zeros(num_timesteps, dtype=np.int64)

    def probabilities(self) -> np.ndarray:
        if not (self.loss_counts == self.history).all():
            return np.full(self.num_timesteps, 1.0 / self.num_timesteps)
        p = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        p /= p.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(
        self, batch_size: int, device: torch.device, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.tensor(self.probabilities(), dtype=torch.float32, device=device)
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t, weights

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        for step, loss in zip(t.tolist(), losses.detach().float().tolist()):
            if self.loss_counts[step] == self.history:
                self.loss_history[step, :-1] = self.loss_history[step, 1:]
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, self.loss_counts[step]] = loss
                self.loss_counts[step] += 1

    def state_dict(self) -> dict:
        # Tensors, not arrays, so checkpoints load with `torch.load(weights_only=True)`.
        return {
            "loss_history": torch.from_numpy(self.loss_history.copy()),
            "loss_counts": torch.from_numpy(self.loss_counts.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        self.loss_history = state["loss_history"].numpy().astype(np.float64).copy()
        self.loss_counts = state["loss_counts"].numpy().astype(np.int64).copy()


def make_timestep_sampler(config: DiffusionConfig) -> UniformSampler:
    """The timestep sampler named by `config.timestep_sampler`."""
    if config.timestep_sampler == "importance":
        return LossSecondMomentSampler(config.timesteps)
    return UniformSampler(config.timesteps)
