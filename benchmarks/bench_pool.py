"""The pool executor on this machine: 2 CPU workers against 1 on a round of tiny candidates,
and the scheduling overhead per candidate as a fraction of a proxy evaluation.

    python benchmarks/bench_pool.py                         # 4 candidates, the demo's proxy (300 steps)
    python benchmarks/bench_pool.py --candidates 2 --steps 4 --samples 16   # a smoke run
    python benchmarks/bench_pool.py --device cuda --candidates 8 --steps 2000 --batch 128 \
        --samples 1000 --trials-per-gpu 4          # the GPU packing gain: 4 per card against 1

Overhead per candidate = the pool's wall time per candidate with 1 worker minus the same
evaluation's own time (`wall_s`, measured inside the worker): process start, imports and
result hand-back. It is reported against the tiny proxy measured here and against a real
proxy evaluation (`--proxy-s`, default 1,500 s: 20k steps of the IDDPM CIFAR-10 UNet at batch
128 on an H200, README). The 2-against-1 speed-up is bounded by this machine's cores.
With `--device cuda` the two pools are one card with 1 candidate at a time against
`--trials-per-gpu` packed on it (small candidates leave most of an H100/H200 idle).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.execute.base import InlineExecutor
from diffnas.execute.job import EvalJob, EvalSpec, ScoreSpec
from diffnas.execute.pool import PoolExecutor
from diffnas.space.references import get_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--proxy-s", type=float, default=1500.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--trials-per-gpu", type=int, default=4)
    args, _ = parser.parse_known_args()  # run.py passes its own arguments to every script
    arch = get_reference("tiny-digits")
    spec = EvalSpec(
        recipe="proxy",
        recipe_overrides={"steps": args.steps, "batch_size": args.batch},
        score=ScoreSpec(num_samples=args.samples, steps=20),
        device=args.device,
    )
    if args.device == "cuda":  # one card: one candidate at a time, then packed
        pools = {"1 per GPU": {"gpus": [0]}, f"{args.trials_per_gpu} per GPU": {
            "gpus": [0], "trials_per_gpu": args.trials_per_gpu}}  # fmt: skip
    else:
        pools = {"1 worker": {"workers": 1, "gpus": []}, "2 workers": {"workers": 2, "gpus": []}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def jobs(tag: str) -> list[EvalJob]:
            return [
                EvalJob(arch=arch, objective="ddpm", data=DataSpec(kind="digits"), spec=spec,
                recipe=spec.train_recipe("ddpm", "digits"),
                        seed=i, workdir=str(root / tag / str(i)), cache_dir=str(root / "cache"))
                for i in range(args.candidates)
            ]  # fmt: skip

        InlineExecutor().run(jobs("warm-up")[0])  # classifier and reference statistics, once
        timings = {}
        for n, (label, options) in enumerate(pools.items()):
            pool = PoolExecutor(**options)
            start = time.perf_counter()
            results = [r for _, r in pool.run_many(jobs(f"pool{n}"))]
            timings[label] = (time.perf_counter() - start, results)
            pool.close()
    (label1, (wall1, results1)), (label2, (wall2, _)) = timings.items()
    eval_s = sum(r.wall_s for r in results1) / len(results1)
    overhead = wall1 / args.candidates - eval_s
    print(
        f"CPU cores: {os.cpu_count()}; {args.candidates} tiny candidates, {args.steps} steps each\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| pool, {label1}: wall | {wall1:.1f} s |")
    print(f"| pool, {label2}: wall | {wall2:.1f} s |")
    print(f"| speed-up {label2} / {label1} | {wall1 / wall2:.2f}x |")
    print(f"| one evaluation inside its worker | {eval_s:.2f} s |")
    print(f"| scheduling overhead per candidate | {overhead:.2f} s |")
    print(f"| overhead / this tiny proxy | {overhead / eval_s:.1%} |")
    print(f"| overhead / a {args.proxy_s:g} s proxy evaluation | {overhead / args.proxy_s:.3%} |")


if __name__ == "__main__":
    main()
