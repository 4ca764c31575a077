"""The training loop: one denoiser, one recipe, one run folder, resumable bit-exactly.

Run folder contents:
- `checkpoint.pt`: everything needed to resume (model, EMA, optimizer, RNG states, step, timestep
  sampler) plus `metadata`, the recipe and the diffusion config; written atomically every
  `checkpoint_every` steps and at the end.
- `ema.pt`: the EMA weights with the model config (the architecture in `metadata`, or the
  diffusers `model_config` when the metadata has none), diffusion config and `metadata`, which is
  all that sampling (`diffnas sample CKPT`) needs.
- `status.json`: status ("running", "complete", "paused", "diverged", "oom", "failed"), step, loss.
- `metrics.jsonl`: one record every `log_every` steps, plus events (start, resume, end states).

The data order is a function of (seed, epoch), the learning rate a function of the step, so a
checkpoint needs no data-loader state. Learning rate, EMA decay and noise all come from the
step and saved generator states: a resumed run gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.training_utils import EMAModel

from diffnas.errors import UserError
from diffnas.progress import task as progress_task
from diffnas.runs import append_jsonl, read_json, write_json
from diffnas.train.diffusion import DiffusionConfig, GaussianDiffusion, make_timestep_sampler
from diffnas.train.precision import FP32AttentionOnCPU
from diffnas.train.recipe import TrainRecipe

CHECKPOINT = "checkpoint.pt"
EMA_CHECKPOINT = "ema.pt"
STATUS = "status.json"
METRICS = "metrics.jsonl"
# Recipe fields a run may resume with other values of: bookkeeping, and how this machine
# executes the same maths (layout, CPU bf16, compile), resolved per machine by resolve_recipe;
# a search moved to another machine must go on. Bit-exact resume needs them unchanged.
_RESUMABLE_CHANGES = {
    "name",
    "log_every",
    "checkpoint_every",
    "compile",
    "tensorboard",
    "channels_last",
    "bf16_cpu",
}

Status = Literal["complete", "paused", "diverged", "oom"]
OnStep = Callable[[int, torch.Tensor], bool | None]


@dataclass
class TrainResult:
    """How a `train` call ended. `paused` = stopped early by `max_steps` or `on_step` (resumable)."""

    status: Status
    steps: int
    last_loss: float | None
    images_per_sec: float | None
    checkpoint: Path | None
    ema_checkpoint: Path | None
    run_dir: Path
    error: str | None = None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a `checkpoint.pt` or `ema.pt` (on CPU, tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint={str(path)!r} does not exist", field="checkpoint")
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_ema(model: torch.nn.Module, checkpoint: dict[str, Any] | str | Path) -> torch.nn.Module:
    """Copy the EMA weights of a checkpoint (dict or path) into `model`; returns `model`."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["ema_model"])
    return model


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> torch.Tensor:
    """Indices of the images of optimizer step `step`: consecutive slices of the epoch orders."""
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // n
    indices = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        mask = epochs == epoch
        indices[mask] = epoch_permutation(seed, epoch, n)[positions[mask] % n]
    return indices


def _model_config_record(model: torch.nn.Module, metadata: dict[str, Any] | None) -> dict:
    """The model's config, stored once: the metadata's architecture when the caller gave one
    (it rebuilds the model), else the diffusers config (a checkpoint from the Python API)."""
    if metadata and "arch" in metadata:
        return {}
    return {"model_config": dict(model.config)}


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _check_inputs(model: torch.nn.Module, images: torch.Tensor, diffusion: DiffusionConfig) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise UserError("images must be a float tensor N×C×H×W in [-1, 1]", field="images")
    channels, size = model.config.in_channels, model.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if images.shape[1] != channels or tuple(images.shape[2:]) != size or len(images) == 0:
        raise UserError(
            f"images of shape {tuple(images.shape)} do not fit the model "
            f"(in_channels={channels}, sample_size={size})",
            field="images",
        )
    if model.config.out_channels != diffusion.out_channels(channels):
        raise UserError(
            f"model out_channels={model.config.out_channels} does not fit the diffusion config "
            f"(learn_sigma={diffusion.learn_sigma} needs {diffusion.out_channels(channels)})",
            field="out_channels",
        )


def _make_optimizer(model: torch.nn.Module, recipe: TrainRecipe, device: torch.device):
    fused = recipe.fused_adamw and device.type == "cuda"
    return torch.optim.AdamW(
        model.parameters(),
        lr=recipe.lr_at(0),
        betas=recipe.adam_betas,
        weight_decay=recipe.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )


def _check_resumable(
    state: dict, recipe: TrainRecipe, diffusion: DiffusionConfig, seed: int
) -> None:
    saved, current = state["recipe"], recipe.model_dump(mode="json")
    changed = sorted(
        k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if state["diffusion"] != diffusion.model_dump(mode="json"):
        changed.append("diffusion")
    if state["seed"] != seed:
        changed.append("seed")
    if changed:
        raise UserError(
            f"cannot resume: {', '.join(changed)} differ from the checkpoint's; "
            "use the same settings or resume=False",
            field=changed[0],
        )


class TrainStep:
    """One optimizer step of a recipe, and all the state a checkpoint must carry to resume it.

    Split from `train` so benchmarks time exactly the step that training runs. Nothing in
    `__call__` waits for the device: the loss comes back as a device tensor.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        *,
        recipe: TrainRecipe,
        diffusion: DiffusionConfig,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = device = torch.device(device)
        self.recipe, self.seed = recipe, seed
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        model.to(device)
        if recipe.channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.params = list(model.parameters())
        self.optimizer = _make_optimizer(model, recipe, device)
        self.ema = EMAModel(
            self.params,
            decay=recipe.ema_decay,
            min_decay=0.0 if recipe.ema_warmup else float(recipe.ema_decay),
            foreach=True,
        )
        self.diffusion = GaussianDiffusion(diffusion, device)
        self.timestep_sampler = make_timestep_sampler(diffusion)
        self.generator = torch.Generator(device=device)
        torch.manual_seed(seed)  # dropout draws from the global generator
        self.generator.manual_seed(seed + 1)
        self.forward = torch.compile(model) if recipe.compile else model
        self.use_bf16 = recipe.autocast_bf16(device.type)
        # bf16 attention is slower than fp32 on CPU (see train/precision.py)
        cpu_bf16 = self.use_bf16 and device.type == "cpu"
        self.attention_precision = FP32AttentionOnCPU() if cpu_bf16 else contextlib.nullcontext()
        self.data = images.to(device=device, dtype=torch.float32)

    def __call__(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run optimizer step `step` (0-based); returns the detached loss and per-sample terms."""
        recipe, gen, device = self.recipe, self.generator, self.device
        batch = recipe.batch_size
        idx = batch_indices(self.seed, step, batch, len(self.data)).to(device, non_blocking=True)
        x0 = self.data[idx]
        if recipe.random_hflip:
            flip = torch.rand(batch, device=device, generator=gen) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        t, weights = self.timestep_sampler.sample(batch, device, gen)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        x_t = self.diffusion.q_sample(x0, t, noise)
        if recipe.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_bf16),
            self.attention_precision,
        ):
            output = self.forward(x_t, t).sample
        terms = self.diffusion.loss_terms(output, x0, x_t, t, noise)
        loss = (terms["loss"] * weights).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, recipe.grad_clip, foreach=True)
        lr = recipe.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.ema.step(self.params)
        self.timestep_sampler.update(t, terms["loss"].detach())
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a state dict of the model."""
        named = self.model.named_parameters()
        weights = {name: shadow for (name, _), shadow in zip(named, self.ema.shadow_params)}
        weights.update(dict(self.model.named_buffers()))
        return weights

    def state_dict(self) -> dict[str, Any]:
        device = self.device
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.timestep_sampler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "generator": self.generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)
        self.timestep_sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.generator.set_state(state["rng"]["generator"])


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "recipe tensorboard=true needs the `tensorboard` package: pip install -e '.[tensorboard]'",
            field="tensorboard",
        ) from None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def train(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    recipe: TrainRecipe,
    diffusion: DiffusionConfig,
    run_dir: str | Path,
    seed: int,
    device: torch.device | str = "cpu",
    resume: bool = True,
    metadata: dict[str, Any] | None = None,
    max_steps: int | None = None,
    on_step: OnStep | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` (a diffusers `UNet2DModel`, modified in place) on `images` in [-1, 1].

    `max_steps` caps the step count of this call (the LR schedule still spans `recipe.steps`);
    `on_step(step, loss)` runs after every step with the loss as a device tensor and may return
    True to stop. Divergence (NaN/Inf loss, checked every `log_every` steps and before each
    checkpoint) and CUDA out-of-memory end the run with that status instead of raising.
    """
    device = torch.device(device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_inputs(model, images, diffusion)
    ckpt_path, ema_path = run_dir / CHECKPOINT, run_dir / EMA_CHECKPOINT
    metrics_path = run_dir / METRICS
    try:
        trainer = TrainStep(
            model, images, recipe=recipe, diffusion=diffusion, seed=seed, device=device
        )
    except torch.cuda.OutOfMemoryError as exc:  # the model or data alone do not fit
        error = f"CUDA out of memory while setting up: {str(exc).splitlines()[0]}"
        write_json(run_dir / STATUS, {"status": "oom", "step": 0, "error": error})
        append_jsonl(metrics_path, {"event": "oom", "step": 0, "error": error, "time": time.time()})
        return TrainResult("oom", 0, None, None, None, None, run_dir, error)
    tb = _tensorboard_writer(run_dir) if recipe.tensorboard else None
    step, last_loss = 0, None
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, recipe, diffusion, seed)
        trainer.load_state_dict(state)
        step, last_loss = state["step"], state.get("last_loss")
        append_jsonl(metrics_path, {"event": "resume", "step": step, "time": time.time()})
    else:
        append_jsonl(metrics_path, {"event": "start", "step": 0, "time": time.time()})

    def save(status_name: str) -> None:
        common = {
            "step": step,
            "ema_model": trainer.ema_weights(),
            **_model_config_record(model, metadata),
            "diffusion": diffusion.model_dump(mode="json"),
            "recipe": recipe.model_dump(mode="json"),
            "metadata": metadata or {},
            "seed": seed,
            "last_loss": last_loss,
        }
        full = {
            **common,
            **trainer.state_dict(),
            "format": "diffnas-train-v1",
            "status": status_name,
        }
        _save_atomic(full, ckpt_path)
        _save_atomic({**common, "format": "diffnas-ema-v1"}, ema_path)

    def write_status(status_name: str, ips: float | None, error: str | None = None) -> None:
        write_json(
            run_dir / STATUS,
            {
                "status": status_name,
                "step": step,
                "steps": recipe.steps,
                "last_loss": last_loss,
                "images_per_sec": ips,
                "checkpoint": str(ckpt_path) if ckpt_path.exists() else None,
                "ema_checkpoint": str(ema_path) if ema_path.exists() else None,
                "error": error,
                "updated": time.time(),
            },
        )

    end_step = recipe.steps if max_steps is None else min(recipe.steps, max_steps)
    batch = recipe.batch_size
    write_status("running", None)

    # Device-side accumulators: read (one sync) only every `log_every` steps.
    loss_sum = torch.zeros((), device=device)
    vb_sum = torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    logged_steps, timed_steps, interval_start = 0, 0, time.perf_counter()
    run_images, run_seconds, first_step = 0, 0.0, True
    status: str = "complete"
    error: str | None = None
    stopped = False

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        with progress_task(
            f"training {recipe.name}", total=recipe.steps, completed=step, enabled=progress
        ) as bar:
            while step < end_step and not stopped:
                detached, terms = trainer(step)
                lr = recipe.lr_at(step)
                step += 1
                loss_sum += detached
                if "vb" in terms:
                    vb_sum += terms["vb"].mean()
                nonfinite |= ~torch.isfinite(detached)
                logged_steps += 1
                timed_steps += 1
                if first_step:  # keep warm-up (and compile) out of the throughput
                    sync()
                    first_step, interval_start, timed_steps = False, time.perf_counter(), 0
                if on_step is not None and on_step(step, detached):
                    stopped = True
                log_now = step % recipe.log_every == 0 or step == end_step or stopped
                save_now = step % recipe.checkpoint_every == 0 or step == end_step or stopped
                if (log_now or save_now) and bool(nonfinite):
                    status, error = "diverged", f"non-finite loss by step {step}"
                    break
                if log_now and logged_steps:
                    last_loss = float(loss_sum) / logged_steps  # the sync
                    elapsed = time.perf_counter() - interval_start
                    ips = timed_steps * batch / elapsed if timed_steps else None
                    run_images += timed_steps * batch
                    run_seconds += elapsed if timed_steps else 0.0
                    record = {"step": step, "loss": last_loss, "lr": lr, "images_per_sec": ips}
                    record["ema_decay"] = trainer.ema.cur_decay_value
                    if "vb" in terms:
                        record["vb"] = float(vb_sum) / logged_steps
                    append_jsonl(metrics_path, record)
                    if tb is not None:
                        for key, value in record.items():
                            if key != "step" and value is not None:
                                tb.add_scalar(f"train/{key}", value, step)
                    ips_text = "-" if ips is None else f"{ips:.0f}"
                    bar.update(step, info=f"loss {last_loss:.4f}, {ips_text} img/s")
                    loss_sum.zero_()
                    vb_sum.zero_()
                    logged_steps, timed_steps, interval_start = 0, 0, time.perf_counter()
                if save_now:
                    final = step == recipe.steps
                    save("complete" if final else "running")
                    write_status("complete" if final else "running", None)
    except torch.cuda.OutOfMemoryError as exc:
        status, error = "oom", f"CUDA out of memory at step {step}: {str(exc).splitlines()[0]}"
        trainer.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except BaseException as exc:
        write_status("failed", None, error=repr(exc))
        append_jsonl(metrics_path, {"event": "failed", "step": step, "error": repr(exc)})
        raise

    if status == "complete" and step < recipe.steps:
        status = "paused"
    if status == "complete" and not ckpt_path.exists():
        save(status)  # a finished run resumed with nothing left to do still leaves its files
    if tb is not None:
        tb.close()
    ips = run_images / run_seconds if run_seconds > 0 else None
    write_status(status, ips, error)
    append_jsonl(
        metrics_path,
        {
            "event": status,
            "step": step,
            "last_loss": last_loss,
            "error": error,
            "time": time.time(),
        },
    )
    return TrainResult(
        status=status,  # type: ignore[arg-type]
        steps=step,
        last_loss=last_loss,
        images_per_sec=ips,
        checkpoint=ckpt_path if ckpt_path.exists() else None,
        ema_checkpoint=ema_path if ema_path.exists() else None,
        run_dir=run_dir,
        error=error,
    )


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The `status.json` of a run folder."""
    return read_json(Path(run_dir) / STATUS)
