"""Careless input, case by case: exit code 2, one paragraph naming the file or field, no
traceback, and no numbered run folder left behind.

Every case goes through `diffnas.cli.main.run` — the console script's own function, with its
error handler — in this process (a subprocess per case would cost ~40 imports of torch); a
subset runs again in a real subprocess to prove the entry point itself, usage errors from
typer's vendored click included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image

from diffnas.cli.main import USAGE_ERRORS, run
from diffnas.data.datasets import DataSpec
from diffnas.model.builder import build_unet
from diffnas.runs import OPTIONS_FILE
from diffnas.search.config import SearchConfig
from diffnas.space.arch import parse_arch
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.options import TrainOptions
from diffnas.train.recipe import TrainRecipe

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
SPACE = """name: broken
image_size: 16
in_channels: 1
base_channels: [16]
num_levels: [2]
channel_mult_values: [1, 2]
num_res_blocks: [1]
head_channels: [16]
budget: {max_gmacs: 1}
"""
RANDOM = ["--proposer", "random"]  # a search that would need no LLM if it started

# (id, command line, fragments the message must hold: the file or field, and what is wrong)
CASES = [
    # usage errors (typer's own click)
    ("unknown-command", ["nosuchcmd"], ["No such command 'nosuchcmd'"]),
    ("unknown-option", ["cost", "--bogus"], ["--bogus", "diffnas cost"]),
    ("missing-argument", ["space", "show"], ["Missing argument", "space show"]),
    ("rounds-not-int", ["search", "--rounds", "abc"], ["--rounds", "integer"]),
    ("sample-n-0", ["space", "sample", "tiny", "-n", "0"], ["--num", "greater than"]),
    ("sample-n-negative", ["space", "sample", "tiny", "-n", "-1"], ["--num"]),
    ("sample-n-huge", ["space", "sample", "tiny", "-n", "100000"], ["--num", "less than"]),
    ("sample-n-word", ["space", "sample", "tiny", "-n", "abc"], ["--num", "integer"]),
    # a space YAML with an empty choice list
    *[
        (f"space-{field}-empty-{cmd}", [cmd, *args], [f"{field}.yaml", f"{field}=[]"])
        for field in ("mid_attention", "dropout", "norm_groups")
        for cmd, args in (
            ("space", ["sample", f"{field}.yaml"]),
            ("search", ["--space", f"{field}.yaml", *RANDOM]),
        )
    ],
    # architectures: not text, absurd values
    ("cost-binary-json", ["cost", "binary.json"], ["binary.json", "not a text file"]),
    ("cost-binary-file", ["cost", "blob.bin"], ["blob.bin", "not a text file"]),
    ("cost-huge-channels", ["cost", "huge.json"], ["huge.json", "base_channels", "4096"]),
    ("cost-million-blocks", ["cost", "blocks.json"], ["blocks.json", "num_res_blocks", "16"]),
    (
        "cost-million-blocks-in-space",
        ["cost", "blocks.json", "--space", "tiny"],
        ["blocks.json", "num_res_blocks"],
    ),
    # data
    ("data-truncated-npz", ["train", "small.json", "--data", "trunc.npz"], ["trunc.npz"]),
    ("data-not-npz", ["train", "small.json", "--data", "text.npz"], ["text.npz", ".npz archive"]),
    ("data-bad-images", ["train", "small.json", "--data", "images"], ["1.png", "cannot be read"]),
    ("data-string-labels", ["train", "small.json", "--data", "strlab.npz"], ["strlab.npz", "'y'"]),
    ("search-truncated-npz", ["search", "--data", "trunc.npz", *RANDOM], ["trunc.npz"]),
    # recipe
    ("train-adam-betas", ["train", "small.json", "--set", "adam_betas=[2,2]"], ["adam_betas"]),
    ("search-adam-betas", ["search", "--set", "adam_betas=[2,2]", *RANDOM], ["adam_betas"]),
    # checkpoints
    ("sample-truncated-ckpt", ["sample", "trunc.pt"], ["trunc.pt", "not a diffnas checkpoint"]),
    ("score-garbage-ckpt", ["score", "garbage.pt"], ["garbage.pt", "not a diffnas checkpoint"]),
    ("sample-arch-json", ["sample", "small.json"], ["small.json", "diffnas train"]),
    # scoring needs, checked before sampling
    ("score-unlabelled", ["score", "train_run", "--data", "nolabels.npz"], ["no labels"]),
    (
        "score-missing-weights",
        ["score", "train_run", "--extractor", "inception", "--inception-weights", "no.pth"],
        ["no.pth"],
    ),
    ("search-unlabelled", ["search", "--data", "nolabels.npz", *RANDOM], ["nolabels"]),
    # run folders
    ("train-resume-bad-status", ["train", "--resume", "bad_status"], ["status.json", "JSON"]),
    ("status-of-train-run", ["status", "train_run"], ["train_run", "train run folder"]),
    ("status-bad-options", ["status", "bad_options"], ["options.json", "JSON"]),
    ("search-resume-bad-options", ["search", "--resume", "bad_options"], ["options.json"]),
    ("train-runs-is-file", ["train", "small.json", "--runs", "afile"], ["--runs", "afile"]),
    ("search-runs-is-file", ["search", "--runs", "afile", *RANDOM], ["--runs", "afile"]),
    # options checked before a dry run and before a run
    (
        "dry-run-structured",
        ["search", "--dry-run", "--llm", "openai:m", "--structured", "weird"],
        ["structured='weird'"],
    ),
    ("search-structured", ["search", "--llm", "openai:m", "--structured", "weird"], ["structured"]),
    (
        "search-resume-new-options",
        ["search", "--resume", "search_run", "--rounds", "5", "--space", "other"],
        ["--rounds", "--space", "--resume"],
    ),
    ("sample-resume-new-options", ["sample", "--resume", "train_run", "-n", "3"], ["--num"]),
    ("search-device-tpu", ["search", "--device", "tpu", *RANDOM], ["--device 'tpu'"]),
    (
        "search-data-wrong-size",
        ["search", "--data-image-size", "12", *RANDOM],
        ["12x12", "--data-image-size 16"],
    ),
    (
        "search-halving-too-many-rungs",
        ["search", "--proxy-steps", "8", "--halving-rungs", "4", *RANDOM],
        ["--halving-rungs 4", "at least 27 steps"],
    ),
    ("search-schedule", ["search", "--schedule", "eager", *RANDOM], ["schedule", "async"]),
    ("train-device-tpu", ["train", "small.json", "--device", "tpu"], ["--device 'tpu'"]),
    ("sample-device-tpu", ["sample", "train_run", "--device", "tpu"], ["--device 'tpu'"]),
    ("train-device-cuda-7", ["train", "small.json", "--device", "cuda:7"], ["cuda:7"]),
]
SUBPROCESS_CASES = [
    "unknown-command",
    "unknown-option",
    "missing-argument",
    "rounds-not-int",
    "sample-n-0",
    "cost-million-blocks",
    "data-truncated-npz",
    "status-of-train-run",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One folder holding every bad file the cases name (cases run with it as cwd)."""
    ws = tmp_path_factory.mktemp("bad-input")
    build_workspace(ws)
    return ws


def build_workspace(ws: Path) -> None:
    """The files of `workspace` (also used by tests/test_cli_bad_input_readback.py)."""
    for field in ("mid_attention", "dropout", "norm_groups"):
        (ws / f"{field}.yaml").write_text(f"{SPACE}{field}: []\n")
    (ws / "binary.json").write_bytes(bytes(range(256)) * 4)
    (ws / "blob.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    (ws / "small.json").write_text(json.dumps(SMALL))
    (ws / "huge.json").write_text(json.dumps({**SMALL, "base_channels": 10**30}))
    (ws / "blocks.json").write_text(json.dumps({**SMALL, "num_res_blocks": 1_000_000}))
    x = np.zeros((8, 16, 16, 1), np.uint8)
    np.savez(ws / "whole.npz", x=x, y=np.arange(8))
    (ws / "trunc.npz").write_bytes((ws / "whole.npz").read_bytes()[:200])
    (ws / "text.npz").write_text("x,y\n1,2\n")
    np.savez(ws / "strlab.npz", x=x, y=np.array(list("abcdefgh")))
    np.savez(ws / "nolabels.npz", x=x)
    (ws / "images" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(ws / "images" / "a" / "0.png")
    (ws / "images" / "a" / "1.png").write_bytes(b"not a png")
    torch.save({"ema_model": {"w": torch.zeros(1000)}}, ws / "whole.pt")
    (ws / "trunc.pt").write_bytes((ws / "whole.pt").read_bytes()[:300])
    (ws / "garbage.pt").write_bytes(os.urandom(2000))
    (ws / "afile").write_text("a file where a folder belongs\n")
    # a train run folder: its options and an untrained EMA checkpoint (no case samples from it)
    options = TrainOptions(
        arch_name="small.json",
        arch=parse_arch(SMALL),
        objective="ddpm",
        recipe_preset="proxy",
        recipe=TrainRecipe(steps=2, warmup_steps=0),
        diffusion=DiffusionConfig.resolve("ddpm", False),
        data=DataSpec(),
        seed=0,
        device="cpu",
    )
    for name in ("train_run", "bad_status"):
        (ws / name).mkdir()
        (ws / name / OPTIONS_FILE).write_text(options.model_dump_json())
    (ws / "bad_status" / "status.json").write_text('{"status": "compl')
    checkpoint = {
        "ema_model": build_unet(options.arch).state_dict(),
        "model_config": {},
        "diffusion": options.diffusion.model_dump(mode="json"),
        "metadata": options.metadata(),
    }
    torch.save(checkpoint, ws / "train_run" / "ema.pt")
    (ws / "bad_options").mkdir()
    (ws / "bad_options" / OPTIONS_FILE).write_text('{"space": ')
    (ws / "search_run").mkdir()
    (ws / "search_run" / OPTIONS_FILE).write_text(SearchConfig().model_dump_json())


def snapshot(ws: Path) -> set[Path]:
    return {p.relative_to(ws) for p in ws.rglob("*")}


def check_refusal(code: int | None, stderr: str, fragments: list[str]) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    message = stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message  # one paragraph
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_paragraph_and_exit_2(
    workspace: Path, monkeypatch, capsys, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(sys, "argv", ["diffnas", *args])
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_:  # any other exception is the traceback a user sees
        run()
    check_refusal(exit_.value.code, capsys.readouterr().err, fragments)
    assert snapshot(workspace) == before  # no run folder, no file, nothing written


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_real_entry_point_refuses_the_same_way(workspace: Path, case: str) -> None:
    (args, fragments) = next(c[1:] for c in CASES if c[0] == case)
    before = snapshot(workspace)
    proc = subprocess.run(
        [sys.executable, "-c", "from diffnas.cli.main import run; run()", *args],
        capture_output=True, text=True, timeout=120, cwd=workspace,
    )  # fmt: skip
    check_refusal(proc.returncode, proc.stderr, fragments)
    assert snapshot(workspace) == before


def test_every_subprocess_case_is_in_the_table() -> None:
    assert set(SUBPROCESS_CASES) <= {c[0] for c in CASES}
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_handler_catches_the_click_typer_raises() -> None:
    # typer.BadParameter comes from whichever click typer uses (typer._click when vendored)
    assert issubclass(typer.BadParameter, USAGE_ERRORS)
    vendored = getattr(typer, "_click", None)
    if vendored is not None:
        assert vendored.exceptions.UsageError in USAGE_ERRORS


def test_any_garbage_checkpoint_is_refused_as_not_ours(tmp_path) -> None:
    """Random bytes after a pickle header fail torch's unpickler in many ways (IndexError,
    KeyError, UnicodeDecodeError, ...): each is the same refusal, never a traceback."""
    import random

    from diffnas.errors import UserError
    from diffnas.train.checkpoint import load_trained

    path = tmp_path / "garbage.pt"
    for seed in range(200):
        path.write_bytes(b"\x80\x02" + random.Random(seed).randbytes(500))
        with pytest.raises(UserError, match="not a diffnas checkpoint"):
            load_trained(path)
