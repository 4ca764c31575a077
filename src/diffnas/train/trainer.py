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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.training_utils import EMAModel

from diffnas.errors import UserError
from diffnas.progress import task as progress_task
from diffnas.runs import append_jsonl, write_json
from diffnas.train.checkpoint import (
    CHECKPOINT,
    EMA_CHECKPOINT,
    TrainStatus,
    load_checkpoint,
    save_atomic,
)
from diffnas.train.checkpoint import read_status as read_status_file
from diffnas.train.checkpoint import restore_ema as restore_ema  # re-exported for old callers
from diffnas.train.device import fast_cuda_math
from diffnas.train.diffusion import DiffusionConfig, GaussianDiffusion
from diffnas.train.precision import FP32AttentionOnCPU
from diffnas.train.recipe import TrainRecipe
from diffnas.train.timestep_sampler import make_timestep_sampler

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
    `__call__` waits for the device: the loss comes back as a device tensor. It sets no
    process-wide flag: `train` runs it inside `fast_cuda_math` (cuDNN autotuning, TF32).
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


class TrainLoop:
    """The loop of one `train` call, read top to bottom like improved-diffusion's TrainLoop:
    `start` (fresh or resumed), `run_loop` (`run_step`, `log`, `save`), `finish`.

    Losses accumulate on the device and are read (one sync) only every `log_every` steps.
    """

    def __init__(
        self,
        trainer: TrainStep,
        *,
        diffusion: DiffusionConfig,
        run_dir: Path,
        metadata: dict[str, Any] | None,
        max_steps: int | None,
        on_step: OnStep | None,
        progress: bool,
    ) -> None:
        self.trainer, self.recipe, self.device = trainer, trainer.recipe, trainer.device
        self.diffusion, self.run_dir, self.metadata = diffusion, run_dir, metadata or {}
        self.on_step = on_step
        self.ckpt_path, self.ema_path = run_dir / CHECKPOINT, run_dir / EMA_CHECKPOINT
        self.metrics_path = run_dir / METRICS
        self.tb = _tensorboard_writer(run_dir) if self.recipe.tensorboard else None
        steps = self.recipe.steps
        self.end_step = steps if max_steps is None else min(steps, max_steps)
        self.step, self.last_loss = 0, None
        self.progress = progress
        # the interval since the last log line, on the device and on the clock
        self.loss_sum = torch.zeros((), device=self.device)
        self.vb_sum = torch.zeros((), device=self.device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.logged_steps, self.timed_steps, self.interval_start = 0, 0, time.perf_counter()
        # the throughput of this call, warm-up (and compile) excluded
        self.run_images, self.run_seconds, self.first_step = 0, 0.0, True

    # ----- start -----
    def start(self, resume: bool) -> None:
        """Load the run folder's checkpoint (when resuming and there is one) or start at step 0."""
        if resume and self.ckpt_path.exists():
            state = load_checkpoint(self.ckpt_path)
            try:
                _check_resumable(state, self.recipe, self.diffusion, self.trainer.seed)
                self.trainer.load_state_dict(state)
                self.step, self.last_loss = int(state["step"]), state.get("last_loss")
            except UserError:
                raise
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
                # a checkpoint of something else, or weights that do not fit this model
                text = " ".join(str(err).split())[:160]
                raise UserError(
                    f"checkpoint {str(self.ckpt_path)!r} does not hold this run's training state "
                    f"({type(err).__name__}: {text}); delete it to train from step 0",
                    field="checkpoint",
                ) from None
            self._event("resume")
        else:
            self._event("start")
        self.write_status("running", None)

    # ----- the loop -----
    def run_loop(self) -> TrainResult:
        """Steps until `end_step`, a stop asked by `on_step`, divergence or CUDA out-of-memory."""
        recipe = self.recipe
        status, error = "complete", None
        try:
            with progress_task(
                f"training {recipe.name}",
                total=recipe.steps,
                completed=self.step,
                enabled=self.progress,
            ) as self.bar:
                stopped = False
                while self.step < self.end_step and not stopped:
                    lr, terms, stopped = self.run_step()
                    step, last = self.step, self.step == self.end_step or stopped
                    log_now = step % recipe.log_every == 0 or last
                    save_now = step % recipe.checkpoint_every == 0 or last
                    if (log_now or save_now) and bool(self.nonfinite):
                        status, error = "diverged", f"non-finite loss by step {step}"
                        break
                    if log_now and self.logged_steps:
                        self.log(lr, terms)
                    else:  # the count (and its ETA) every step; the loss at log steps only,
                        self.bar.update(step)  # as reading it waits for the device
                    if save_now:
                        final = step == recipe.steps
                        self.save("complete" if final else "running")
                        self.write_status("complete" if final else "running", None)
        except torch.cuda.OutOfMemoryError as exc:
            status = "oom"
            error = f"CUDA out of memory at step {self.step}: {str(exc).splitlines()[0]}"
            self.trainer.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except BaseException as exc:
            self.write_status("failed", None, error=repr(exc))
            append_jsonl(
                self.metrics_path, {"event": "failed", "step": self.step, "error": repr(exc)}
            )
            raise
        return self.finish(status, error)

    def run_step(self) -> tuple[float, dict[str, torch.Tensor], bool]:
        """One optimizer step, its losses added to the interval; (lr, loss terms, stop asked)."""
        detached, terms = self.trainer(self.step)
        lr = self.recipe.lr_at(self.step)
        self.step += 1
        self.loss_sum += detached
        if "vb" in terms:
            self.vb_sum += terms["vb"].mean()
        self.nonfinite |= ~torch.isfinite(detached)
        self.logged_steps += 1
        self.timed_steps += 1
        if self.first_step:  # keep warm-up (and compile) out of the throughput
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_step, self.interval_start, self.timed_steps = False, time.perf_counter(), 0
        stop = self.on_step is not None and bool(self.on_step(self.step, detached))
        return lr, terms, stop

    def log(self, lr: float, terms: dict[str, torch.Tensor]) -> None:
        """Read the interval's losses (the sync), write a metrics line, tensorboard, the bar."""
        batch, step = self.recipe.batch_size, self.step
        self.last_loss = float(self.loss_sum) / self.logged_steps
        elapsed = time.perf_counter() - self.interval_start
        ips = self.timed_steps * batch / elapsed if self.timed_steps else None
        self.run_images += self.timed_steps * batch
        self.run_seconds += elapsed if self.timed_steps else 0.0
        record = {"step": step, "loss": self.last_loss, "lr": lr, "images_per_sec": ips}
        record["ema_decay"] = self.trainer.ema.cur_decay_value
        if "vb" in terms:
            record["vb"] = float(self.vb_sum) / self.logged_steps
        append_jsonl(self.metrics_path, record)
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self.tb.add_scalar(f"train/{key}", value, step)
        ips_text = "-" if ips is None else f"{ips:.0f}"
        self.bar.update(step, info=f"loss {self.last_loss:.4f}, {ips_text} img/s")
        self.loss_sum.zero_()
        self.vb_sum.zero_()
        self.logged_steps, self.timed_steps, self.interval_start = 0, 0, time.perf_counter()

    # ----- files -----
    def save(self, status_name: str) -> None:
        """ema.pt (everything to sample), then checkpoint.pt (everything to resume), each
        atomically. The checkpoint is what a resume trusts, so it is written last: a kill
        between the two leaves the older checkpoint, and the resumed run trains from it and
        writes both again (checkpoint first left a finished checkpoint beside a missing or
        older ema.pt, which the resume then sampled)."""
        common = {
            "step": self.step,
            "ema_model": self.trainer.ema_weights(),
            **_model_config_record(self.trainer.model, self.metadata),
            "diffusion": self.diffusion.model_dump(mode="json"),
            "recipe": self.recipe.model_dump(mode="json"),
            "metadata": self.metadata,
            "seed": self.trainer.seed,
            "last_loss": self.last_loss,
        }
        full = {
            **common,
            **self.trainer.state_dict(),
            "format": "diffnas-train-v1",
            "status": status_name,
        }
        save_atomic({**common, "format": "diffnas-ema-v1"}, self.ema_path)
        save_atomic(full, self.ckpt_path)

    def write_status(self, status_name: str, ips: float | None, error: str | None = None) -> None:
        write_json(
            self.run_dir / STATUS,
            {
                "status": status_name,
                "step": self.step,
                "steps": self.recipe.steps,
                "last_loss": self.last_loss,
                "images_per_sec": ips,
                "checkpoint": str(self.ckpt_path) if self.ckpt_path.exists() else None,
                "ema_checkpoint": str(self.ema_path) if self.ema_path.exists() else None,
                "error": error,
                "updated": time.time(),
            },
        )

    def _event(self, name: str) -> None:
        append_jsonl(self.metrics_path, {"event": name, "step": self.step, "time": time.time()})

    # ----- finish -----
    def finish(self, status: str, error: str | None) -> TrainResult:
        """The end state in status.json and metrics.jsonl, and the result."""
        if status == "complete" and self.step < self.recipe.steps:
            status = "paused"
        # a finished run resumed with nothing left to do still leaves both files (a folder an
        # older diffnas left with checkpoint.pt but no ema.pt after a kill gets its ema.pt)
        if status == "complete" and not (self.ckpt_path.exists() and self.ema_path.exists()):
            self.save(
                status
            )  # a finished run resumed with nothing left to do still leaves its files
        if self.tb is not None:
            self.tb.close()
        ips = self.run_images / self.run_seconds if self.run_seconds > 0 else None
        self.write_status(status, ips, error)
        append_jsonl(
            self.metrics_path,
            {
                "event": status,
                "step": self.step,
                "last_loss": self.last_loss,
                "error": error,
                "time": time.time(),
            },
        )
        return TrainResult(
            status=status,  # type: ignore[arg-type]
            steps=self.step,
            last_loss=self.last_loss,
            images_per_sec=ips,
            checkpoint=self.ckpt_path if self.ckpt_path.exists() else None,
            ema_checkpoint=self.ema_path if self.ema_path.exists() else None,
            run_dir=self.run_dir,
            error=error,
        )


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
    with fast_cuda_math(device):
        try:
            trainer = TrainStep(
                model, images, recipe=recipe, diffusion=diffusion, seed=seed, device=device
            )
        except torch.cuda.OutOfMemoryError as exc:  # the model or data alone do not fit
            return _oom_at_setup(run_dir, exc)
        loop = TrainLoop(
            trainer,
            diffusion=diffusion,
            run_dir=run_dir,
            metadata=metadata,
            max_steps=max_steps,
            on_step=on_step,
            progress=progress,
        )
        loop.start(resume)
        return loop.run_loop()


def _oom_at_setup(run_dir: Path, exc: torch.cuda.OutOfMemoryError) -> TrainResult:
    error = f"CUDA out of memory while setting up: {str(exc).splitlines()[0]}"
    write_json(run_dir / STATUS, {"status": "oom", "step": 0, "error": error})
    append_jsonl(
        run_dir / METRICS, {"event": "oom", "step": 0, "error": error, "time": time.time()}
    )
    return TrainResult("oom", 0, None, None, None, None, run_dir, error)


def read_status(run_dir: str | Path) -> TrainStatus:
    """The `status.json` of a run folder, checked."""
    return read_status_file(Path(run_dir) / STATUS)
