"""Hostile input at the limits (issue 19), case by case, through the console script's `run`.

The classes: sizes (4), numbers at their limits (5), checks that came too late (7) and metrics
a search cannot rank by (9). Every case ends in exit code 2 with one paragraph naming the
option, field or file, no traceback, nothing written, in well under 20 s. The cases whose
input once took gigabytes (a "billion laughs" YAML, a resize to 1024 px, a folder of big
images with one damaged) run again in a real process whose peak memory is read back with
`os.wait4`: under 2 GiB. Renderers (class 6) are not refusals: `test_report.py` checks them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffnas.cli.main import run
from diffnas.search.config import SearchConfig
from test_cli_bad_input import RANDOM, SMALL, check_refusal, snapshot

SECONDS = 20.0
MAX_RSS_BYTES = 2 * 2**30
SPACE = {
    "name": "limits",
    "image_size": 16,
    "in_channels": 1,
    "base_channels": [16],
    "num_levels": [2],
    "channel_mult_values": [1, 2],
    "num_res_blocks": [1],
    "head_channels": [16],
    "norm_groups": [8],
    "budget": {"max_gmacs": 1},
}
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi")
)
TINY = ["--proxy-steps", "2", "--proxy-batch-size", "4", "--score-samples", "4", "--promote", "0"]
OPENAI = ["--llm", "openai:gpt-4o-mini"]

# (id, command line, fragments the message must hold: the option, field or file, and the rule)
CASES = [
    # --- class 4: sizes bounded before anything is allocated ---
    ("resize-to-1024", ["search", "--dry-run", "--data-image-size", "1024", *RANDOM],
     ["--data-image-size 1024", "16x16"]),
    ("resize-to-100000", ["search", "--dry-run", "--data-image-size", "100000", *RANDOM],
     ["--data-image-size", "1024"]),
    ("billion-laughs-arch", ["cost", "laughs.yaml"], ["laughs.yaml", "100,000"]),
    ("many-aliases-arch", ["cost", "aliases.yaml"], ["aliases.yaml", "1000 aliases"]),
    ("arch-over-1mb", ["cost", "big.json"], ["big.json", "1,000,000 bytes"]),
    ("billion-laughs-space", ["space", "sample", "laughs-space.yaml"], ["laughs-space.yaml", "100,000"]),
    ("astronomical-channel-mults", ["space", "sample", "astro.yaml"],
     ["astro.yaml", "channel_mult", "4,581,298,448", "10,000"]),
    ("astronomical-attention-subsets", ["search", "--space", "attn.yaml", *RANDOM],
     ["attn.yaml", "attention_resolutions", "1,048,576"]),
    ("compare-a-million-seeds", ["compare", "--seeds", "1000000", "--dry-run"],
     ["--seeds", "less than or equal to 100"]),
    ("npz-header-of-a-terabyte", ["search", "--dry-run", "--data", "huge.npz", *RANDOM],
     ["--data huge.npz", "100,000 images", "GiB"]),
    ("batch-too-big-for-memory", ["search", "--dry-run", "--space", "cifar10-iddpm", "--data",
     "rgb32.npz", "--proxy-batch-size", "4096", *RANDOM],
     ["--proxy-batch-size 4096", "iddpm-cifar10", "GiB"]),
    ("image-folder-damaged", ["train", "small.json", "--data", "imgs"], ["z.png", "cannot be read"]),
    # --- class 5: numbers at their limits ---
    ("seed-2-to-the-64", ["search", "--seed", str(2**64), *RANDOM], ["--seed", "4294967295"]),
    ("seed-negative", ["sample", "train_run", "--seed", "-1"], ["--seed", "greater than or equal to 0"]),
    ("llm-timeout-inf", ["search", "--llm-timeout", "inf", *OPENAI], ["--llm-timeout", "3600"]),
    ("llm-max-usd-nan", ["search", "--llm-max-usd", "nan", *RANDOM], ["--llm-max-usd"]),
    ("time-budget-1e400", ["search", "--time-budget", "1e400", *RANDOM], ["--time-budget"]),
    ("weight-decay-inf", ["search", "--set", "weight_decay=inf", *RANDOM], ["weight_decay", "finite"]),
    ("lr-nan", ["train", "small.json", "--set", "lr=NaN"], ["lr", "finite"]),
    ("vlb-weight-inf", ["train", "small.json", "--set", "diffusion.vlb_weight=inf"], ["vlb_weight"]),
    ("batch-1e8", ["search", "--proxy-batch-size", "100000000", *RANDOM],
     ["--proxy-batch-size", "4096"]),
    ("score-samples-1e8", ["search", "--score-samples", "100000000", *RANDOM],
     ["--score-samples", "100000"]),
    ("train-steps-1e9", ["train", "small.json", "--steps", "1000000000"], ["--steps", "10000000"]),
    ("labels-past-the-classes", ["search", "--data", "biglabels.npz", *RANDOM],
     ["biglabels.npz", "'y'", "0 .. 99999", "1000000000"]),
    ("labels-uint64-past-int64", ["train", "small.json", "--data", "u64labels.npz"],
     ["u64labels.npz", "'y'", "9223372036854775808"]),
    # --- class 7: refused in the plan, before any folder ---
    ("api-key-missing", ["search", *OPENAI], ["OPENAI_API_KEY"]),
    ("api-key-env-empty", ["search", *OPENAI, "--api-key-env", ""], ["--api-key-env ''"]),
    ("api-key-env-not-a-name", ["search", *OPENAI, "--api-key-env", "MY KEY"], ["--api-key-env 'MY KEY'"]),
    ("anthropic-key-missing", ["search", "--llm", "anthropic:claude-x"], ["ANTHROPIC_API_KEY"]),
    ("local-model-missing", ["search", "--llm", "local"], ["DIFFNAS_LOCAL_MODEL", "no-such.gguf"]),
    ("prompt-dir-missing", ["search", "--prompt-dir", "no-such-dir"], ["prompt_dir", "no-such-dir"]),
    ("prompt-placeholder-unknown", ["search", "--prompt-dir", "prompts", "--dry-run"],
     ["repair.txt", "$problemz", "$problems"]),
    ("space-reference-unknown", ["search", "--space", "noref.yaml", *RANDOM],
     ["noref.yaml", "reference", "no-such-net"]),
    ("space-never-valid", ["search", "--space", "never.yaml", *RANDOM], ["never", "no valid architecture"]),
    ("score-steps-past-T", ["search", "--score-steps", "5000", *RANDOM], ["--score-steps 5000", "1000"]),
    ("fid-steps-past-T", ["search", "--fid-steps", "1001", *RANDOM], ["--fid-steps 1001", "1000"]),
    ("inception-offline", ["search", "--extractor", "inception", *RANDOM], ["Inception", "could not be downloaded"]),
    ("one-image-dataset", ["search", "--data", "one.npz", *RANDOM], ["1 image", "at least 4"]),
    ("one-class-dataset", ["search", "--data", "oneclass.npz", *RANDOM], ["1 class", "at least 2"]),
    ("duplicate-key-json", ["cost", "dup.json"], ["dup.json", "'base_channels' appears twice"]),
    ("duplicate-key-yaml", ["cost", "dup.yaml"], ["dup.yaml", "'num_res_blocks' appears twice", "line 3"]),
    ("duplicate-key-space", ["search", "--space", "dupspace.yaml", *RANDOM], ["dupspace.yaml", "'budget' appears twice"]),
    # --- class 9: a search ranks by a proxy metric ---
    ("metric-fid", ["search", "--metric", "fid", *RANDOM, *TINY], ["--metric 'fid'", "not a proxy metric"]),
    ("metric-fid-dry-run", ["search", "--dry-run", "--metric", "fid", *RANDOM], ["--metric 'fid'"]),
    ("metric-fid-compare", ["compare", "--metric", "fid", "--dry-run"], ["--metric 'fid'", "rfid"]),
    ("metric-fid-resumed", ["search", "--resume", "fid_run"], ["--metric 'fid'", "not a proxy metric"]),
]  # fmt: skip
# Cases that once took gigabytes, run again in a real process to read its peak memory.
MEASURED = ["resize-to-1024", "billion-laughs-arch", "image-folder-damaged"]


def write_npz(path: Path, n: int, shape: tuple[int, ...] = (16, 16, 1), y=None) -> None:
    x = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    np.savez(path, x=x, **({"y": y} if y is not None else {}))


def npz_with_header_only(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose `x` member announces `shape` but holds no pixels: its size is read from
    the header, so the plan must refuse it without reading the (missing) data."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    npy = b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy + text + b" " * pad + b"\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("limits")
    (ws / "small.json").write_text(json.dumps(SMALL))
    (ws / "laughs.yaml").write_text(LAUGHS)
    (ws / "laughs-space.yaml").write_text(LAUGHS)
    aliases = "x: &x 1\nlist: [" + ", ".join(["*x"] * 2000) + "]\n"
    (ws / "aliases.yaml").write_text(aliases)
    (ws / "big.json").write_text(json.dumps(SMALL) + " " * 1_100_000)
    (ws / "dup.json").write_text(json.dumps(SMALL)[:-1] + ', "base_channels": 4096}')
    (ws / "dup.yaml").write_text("base_channels: 16\nnum_res_blocks: 1\nnum_res_blocks: 2\n")
    space_text = yaml.safe_dump(SPACE)
    (ws / "dupspace.yaml").write_text(space_text + "budget: {max_gmacs: 2}\n")
    spaces = {
        "astro": {"channel_mult_values": list(range(1, 17)), "num_levels": [1, 2, 3, 4, 5, 6, 7, 8],
                  "mult_non_decreasing": False, "image_size": 1024},
        "attn": {"attention_resolutions": list(range(1, 21))},
        "noref": {"reference": "no-such-net"},
        "never": {"norm_groups": [3], "name": "never"},  # 16 channels never divide by 3
    }  # fmt: skip
    for name, change in spaces.items():
        (ws / f"{name}.yaml").write_text(yaml.safe_dump({**SPACE, **change}))
    write_npz(ws / "one.npz", 1, y=np.array([0]))
    write_npz(ws / "oneclass.npz", 8, y=np.zeros(8, np.int64))
    write_npz(ws / "rgb32.npz", 8, (32, 32, 3), y=np.arange(8) % 2)
    write_npz(ws / "biglabels.npz", 8, y=np.array([0, 1, 2, 3, 4, 5, 6, 10**9]))
    write_npz(ws / "u64labels.npz", 8, y=np.array([0, 1, 2, 3, 4, 5, 6, 2**63], np.uint64))
    npz_with_header_only(ws / "huge.npz", (100_000, 1024, 1024, 3))
    (ws / "imgs" / "a").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    for i in range(4):  # big images first: the damaged one sorts last
        Image.fromarray(noise).save(ws / "imgs" / "a" / f"{i}.png")
    (ws / "imgs" / "a" / "z.png").write_bytes((ws / "imgs" / "a" / "0.png").read_bytes()[:5000])
    (ws / "prompts").mkdir()
    (ws / "prompts" / "repair.txt").write_text("Fix these:\n$problemz\nKeep $kept of $n.\n")
    (ws / "fid_run").mkdir()
    options = SearchConfig(proposer="random").model_dump(mode="json")
    options["proxy"]["score"]["metric"] = "fid"  # written by a version that let it through
    (ws / "fid_run" / "options.json").write_text(json.dumps(options))
    (ws / "train_run").mkdir()
    return ws


@pytest.fixture(autouse=True)
def offline_without_keys(monkeypatch, workspace, tmp_path_factory):
    """No API key, no local model file, no network and no Inception weights on disk."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DIFFNAS_INCEPTION_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIFFNAS_LOCAL_MODEL", str(workspace / "no-such.gguf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_paragraph_fast_and_before_any_folder(
    workspace: Path, monkeypatch, capsys, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(sys, "argv", ["diffnas", *args])
    before = snapshot(workspace)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        run()
    elapsed = time.perf_counter() - start
    check_refusal(exit_.value.code, capsys.readouterr().err, fragments)
    assert snapshot(workspace) == before
    assert elapsed < SECONDS


@pytest.mark.parametrize("case", MEASURED)
def test_once_gigabytes_now_a_real_process_under_2_gib(workspace: Path, case: str) -> None:
    args, fragments = next(c[1:] for c in CASES if c[0] == case)
    before = snapshot(workspace)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from diffnas.cli.main import run; run()", *args],
            cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
        timer = threading.Timer(120, proc.kill)
        timer.start()
        try:  # reaped here, not by Popen, to read this child's own peak memory
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    elapsed = time.perf_counter() - start
    check_refusal(proc.returncode, stderr, fragments)
    assert snapshot(workspace) == before
    assert usage.ru_maxrss * 1024 < MAX_RSS_BYTES  # Linux reports kilobytes
    assert elapsed < SECONDS


def test_every_measured_case_is_in_the_table() -> None:
    assert set(MEASURED) <= {c[0] for c in CASES}
    assert len({c[0] for c in CASES}) == len(CASES)
