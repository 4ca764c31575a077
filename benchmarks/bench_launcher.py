"""Warm worker processes against fresh ones: the same tiny jobs through the subprocess executor.

A CPU job forked from the warm launcher (`diffnas.execute.launcher`) skips the ~4 s of imports
a fresh `python -m diffnas.execute.worker` pays. This times J tiny jobs (a few training steps
and a handful of samples: what a short proxy rung or a test costs) started warm and started
fresh (`DIFFNAS_WARM_WORKERS=0`), alternating in R rounds so load on a shared machine hits
both alike, and prints the median seconds per job and their ratio. The first warm round pays
the launcher's own imports once; it is reported apart. Both give the same scores (the executor
conformance tests compare them).

Run: .venv/bin/python benchmarks/bench_launcher.py   (or `make bench`)
Smoke: .venv/bin/python benchmarks/bench_launcher.py --jobs 1 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.execute import launcher
from diffnas.execute.job import EvalJob, EvalSpec, ScoreSpec
from diffnas.execute.process import SubprocessExecutor
from diffnas.space.arch import parse_arch

ARCH = parse_arch(
    {"image_size": 16, "in_channels": 1, "base_channels": 8, "channel_mult": [1, 2],
     "num_res_blocks": 1, "attention_resolutions": [], "mid_attention": False, "norm_groups": 8}
)  # fmt: skip
SPEC = EvalSpec(
    recipe_overrides={"steps": 4, "batch_size": 4},
    score=ScoreSpec(num_samples=8, steps=2, batch_size=8),
    device="cpu",
)


def jobs(root: Path, n: int) -> list[EvalJob]:
    recipe = SPEC.train_recipe("ddpm", "digits")
    data = DataSpec(kind="digits", subset=64, image_size=16)
    return [
        EvalJob(arch=ARCH, objective="ddpm", data=data, spec=SPEC, recipe=recipe, seed=i,
                workdir=str(root / f"job{i}"), cache_dir=str(root / "cache"))
        for i in range(n)
    ]  # fmt: skip


def seconds_per_job(root: Path, n: int, warm: bool) -> float:
    os.environ[launcher.SWITCH] = "1" if warm else "0"
    start = time.perf_counter()
    for _, result in SubprocessExecutor().run_many(jobs(root, n)):
        assert result.status == "complete", result.error
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4, help="jobs per round and kind")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = seconds_per_job(root / "first", args.jobs, warm=True)  # starts the launcher
        warm, fresh = [], []
        for r in range(args.rounds):
            fresh.append(seconds_per_job(root / f"fresh{r}", args.jobs, warm=False))
            warm.append(seconds_per_job(root / f"warm{r}", args.jobs, warm=True))
    w, f = statistics.median(warm), statistics.median(fresh)
    print(f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}, "
          f"{args.rounds} rounds of {args.jobs} jobs each way")  # fmt: skip
    print("| start | s per job (median of rounds) |")
    print("|---|---|")
    print(f"| fresh process (`DIFFNAS_WARM_WORKERS=0`) | {f:.2f} |")
    print(f"| warm launcher | {w:.2f} |")
    print(f"| warm launcher, first round (its own imports once) | {first:.2f} |")
    print(f"\nfresh / warm: **{f / w:.1f}x**")


if __name__ == "__main__":
    main()
