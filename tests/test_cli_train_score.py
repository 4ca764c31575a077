"""`diffnas train | sample | score`: run folders, dry runs, resume, scores with protocol, exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffnas.cli.main import app
from diffnas.data.datasets import load_images
from diffnas.errors import UserError
from diffnas.model.builder import build_unet
from diffnas.model.cost import measure_cost
from diffnas.runs import read_json, read_jsonl, write_json
from diffnas.space.arch import ArchConfig
from diffnas.train.options import TrainOptions
from diffnas.train.trainer import load_checkpoint, train

runner = CliRunner()
# A small grey 16x16 net: a 20-step run takes a few seconds on one CPU thread.
SMALL = {
    "image_size": 16,
    "in_channels": 1,
    "base_channels": 16,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [],
    "mid_attention": False,
    "norm_groups": 8,
}
TRAIN_ARGS = ["--steps", "20", "--batch-size", "16", "--log-every", "5", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded (and a shared CPU is not oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, arch_file) -> Path:
    """One finished 20-step run on digits, shared by the sample/score/resume tests."""
    runs = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", str(arch_file), *TRAIN_ARGS, "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.iterdir()
    return run_dir


def invoke_error(args: list[str]) -> UserError:
    result = runner.invoke(app, args)
    assert isinstance(result.exception, UserError), (result.exit_code, result.output)
    return result.exception


def test_train_writes_options_checkpoint_and_metrics(trained: Path) -> None:
    assert trained.name == "00000-train-small"
    opts = TrainOptions.model_validate_json((trained / "options.json").read_text())
    assert (opts.recipe.steps, opts.recipe.batch_size, opts.recipe.log_every) == (20, 16, 5)
    assert opts.recipe.random_hflip is False  # digits are not mirrored
    assert opts.recipe.warmup_steps == 2  # the proxy's 500 capped at 10 % of a 20-step run
    assert opts.objective == "ddpm" and opts.diffusion.objective == "ddpm"
    assert opts.arch == ArchConfig.model_validate(SMALL) and opts.data.kind == "digits"
    ema = load_checkpoint(trained / "ema.pt")
    assert ema["metadata"]["arch"] == opts.arch.model_dump(mode="json")
    assert "model_config" not in ema  # the architecture is the one model config stored
    assert ema["metadata"]["objective"] == "ddpm" and ema["step"] == 20
    losses = [r["loss"] for r in read_jsonl(trained / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert read_json(trained / "status.json")["status"] == "complete"


def test_dry_run_prints_plan_and_creates_nothing(tmp_path: Path, arch_file: Path) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(arch_file), *TRAIN_ARGS, "--runs", str(runs), "--dry-run"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not runs.exists()
    flops = measure_cost(ArchConfig.model_validate(SMALL)).flops
    assert "20 steps x batch 16 = 320 images" in result.output
    assert f"= {3 * flops * 320 / 1e12:.3g} TFLOPs" in result.output
    assert '"warmup_steps": 2' in result.output  # the resolved recipe is shown


def test_resume_of_a_finished_run_changes_nothing(trained: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in trained.iterdir()}
    result = runner.invoke(app, ["train", "--resume", str(trained)])
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and "steps: 20/20" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in trained.iterdir()} == before


def test_resume_continues_a_paused_run_with_its_saved_options(tmp_path: Path, trained) -> None:
    opts = TrainOptions.model_validate_json((trained / "options.json").read_text())
    run_dir = tmp_path / "00000-train-small"
    run_dir.mkdir()
    write_json(run_dir / "options.json", opts.model_dump(mode="json"))
    torch.manual_seed(opts.seed)  # as the CLI builds the model
    paused = train(
        build_unet(opts.arch), load_images(opts.data).x, recipe=opts.recipe,
        diffusion=opts.diffusion, run_dir=run_dir, seed=opts.seed, max_steps=10,
        metadata=opts.metadata(), progress=False,
    )  # fmt: skip
    assert paused.status == "paused" and paused.steps == 10
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "status: complete  steps: 20/20" in result.output
    assert any(r.get("event") == "resume" for r in read_jsonl(run_dir / "metrics.jsonl"))
    resumed, straight = load_checkpoint(run_dir / "ema.pt"), load_checkpoint(trained / "ema.pt")
    for name, weight in straight["ema_model"].items():  # same as the uninterrupted run
        torch.testing.assert_close(resumed["ema_model"][name], weight, rtol=1e-5, atol=1e-6)


def test_divergence_exits_1_and_keeps_the_folder(
    tmp_path: Path, arch_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffnas.train.diffusion import GaussianDiffusion

    real_loss_terms = GaussianDiffusion.loss_terms

    def nan_loss(self, *args, **kwargs):  # a NaN loss, as a blown-up run would give
        terms = real_loss_terms(self, *args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(GaussianDiffusion, "loss_terms", nan_loss)
    args = ["train", str(arch_file), "--steps", "3", "--batch-size", "4"]
    args += ["--runs", str(tmp_path), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "status: diverged" in result.output
    (run_dir,) = tmp_path.iterdir()
    assert read_json(run_dir / "status.json")["status"] == "diverged"
    assert (run_dir / "options.json").is_file()


def test_sample_writes_n_pngs_and_a_grid(tmp_path: Path, trained: Path) -> None:
    args = ["sample", str(trained), "-n", "5", "--steps", "3", "--runs", str(tmp_path)]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name == "00000-sample-small" and str(run_dir / "images") in result.output
    assert len(list((run_dir / "images").glob("*.png"))) == 5
    assert (run_dir / "grid.png").is_file()
    assert read_json(run_dir / "options.json")["checkpoint"] == str((trained / "ema.pt").resolve())


def test_score_prints_rfid_with_protocol_and_resume_reuses_it(tmp_path: Path, trained) -> None:
    args = ["score", str(trained / "ema.pt"), "--metric", "rfid", "-n", "32", "--steps", "5"]
    args += ["--extractor", "classifier", "--runs", str(tmp_path), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # progress lines go to stderr
    protocol = out["score"]["protocol"]
    assert math.isfinite(out["score"]["value"]) and out["score"]["value"] >= 0
    assert protocol["metric"] == "rfid" and protocol["extractor"].startswith("classifier")
    assert (protocol["num_generated"], protocol["sampler"], protocol["steps"]) == (32, "ddim-5", 5)
    # the reference is the half of digits' 1437 training images the classifier never saw
    assert protocol["num_reference"] == 1437 - 1437 // 2
    assert protocol["reference"].startswith("digits-train")
    assert protocol["reference"].endswith("/classifier-heldout")
    assert out["score"]["label"] == "RFID[classifier]"  # the extractor named next to the value
    assert out["diffusion"]["ddpm_variance"] == "fixed_large"
    run_dir = Path(out["run_dir"])
    assert read_json(run_dir / "score.json") == out
    assert np.load(run_dir / "samples.npz")["images"].shape == (32, 1, 16, 16)
    table = runner.invoke(app, ["score", "--resume", str(run_dir)])  # reuses score.json
    assert table.exit_code == 0, table.output
    for text in ("RFID[classifier]", f"{out['score']['value']:.4g}", "ddim-5", "719"):
        assert text in table.output


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "lrr=1"], "lrr"),
        (["--set", "lr=-1"], "lr=-1"),
        (["--set", "no_equals"], "key=value"),
        (["--steps", "100", "--warmup", "200"], "warmup_steps=200"),
        (["--objective", "iddqd"], "objective"),
        (["--data", "npz:missing.npz"], "missing.npz"),
        (["--recipe", "fast"], "recipe"),
    ],
)
def test_bad_input_is_a_user_error_naming_it(arch_file: Path, args, named: str) -> None:
    err = invoke_error(["train", str(arch_file), "--dry-run", "--device", "cpu", *args])
    assert named in str(err)


def test_unknown_override_lists_the_allowed_keys(arch_file: Path) -> None:
    message = str(invoke_error(["train", str(arch_file), "--set", "lrr=1", "--dry-run"]))
    assert "batch_size" in message and "diffusion.timestep_sampler" in message


def test_data_of_another_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    message = str(invoke_error(["train", "tiny-digits", "--data", str(path), "--dry-run"]))
    assert "3x32x32" in message and "1x16x16" in message


def test_ddpm_objective_refuses_a_learned_variance_arch(tmp_path: Path) -> None:
    path = tmp_path / "sigma.json"
    path.write_text(json.dumps({**SMALL, "learn_sigma": True}))
    message = str(invoke_error(["train", str(path), "--objective", "ddpm", "--dry-run"]))
    assert "learn_sigma" in message


@pytest.mark.parametrize("command", ["sample", "score"])
def test_missing_checkpoint_is_a_user_error(tmp_path: Path, command: str) -> None:
    err = invoke_error([command, str(tmp_path / "nope"), "--runs", str(tmp_path / "runs")])
    assert "nope" in str(err) and not (tmp_path / "runs").exists()


def test_resume_refuses_new_options(trained: Path) -> None:
    message = str(invoke_error(["train", "--resume", str(trained), "--steps", "40"]))
    assert "--steps" in message
