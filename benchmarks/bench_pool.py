"""The pool executor on this machine: 2 CPU workers against 1 on a round of tiny candidates,
and the scheduling overhead per candidate as a fraction of a proxy evaluation.

    python benchmarks/bench_pool.py                         # 4 candidates, the demo's proxy (300 steps)
    python benchmarks/bench_pool.py --candidates 2 --steps 4 --samples 16   # a smoke run

Overhead per candidate = the pool's wall time per candidate with 1 worker minus the same
evaluation's own time (`wall_s`, measured inside the worker): process start, imports and
result hand-back. It is reported against the tiny proxy measured here and against a real
proxy evaluation (`--proxy-s`, default 1,500 s: 20k steps of the IDDPM CIFAR-10 UNet at batch
128 on an H200, README). The 2-against-1 speed-up is bounded by this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from diffnas.data.datasets import DataSpec
from diffnas.execute.executors import InlineExecutor
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
    args, _ = parser.parse_known_args()  # run.py passes its own arguments to every script
    arch = get_reference("tiny-digits")
    spec = EvalSpec(
        recipe="proxy",
        recipe_overrides={"steps": args.steps, "batch_size": args.batch},
        score=ScoreSpec(num_samples=args.samples, steps=20),
        device="cpu",
    )
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
        for workers in (1, 2):
            pool = PoolExecutor(workers=workers, gpus=[])
            start = time.perf_counter()
            results = [r for _, r in pool.run_many(jobs(f"pool{workers}"))]
            timings[workers] = (time.perf_counter() - start, results)
            pool.close()
    wall1, results1 = timings[1]
    wall2, _ = timings[2]
    eval_s = sum(r.wall_s for r in results1) / len(results1)
    overhead = wall1 / args.candidates - eval_s
    print(
        f"CPU cores: {os.cpu_count()}; {args.candidates} tiny candidates, {args.steps} steps each\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| pool, 1 worker: wall | {wall1:.1f} s |")
    print(f"| pool, 2 workers: wall | {wall2:.1f} s |")
    print(f"| speed-up 2 workers / 1 | {wall1 / wall2:.2f}x |")
    print(f"| one evaluation inside its worker | {eval_s:.2f} s |")
    print(f"| scheduling overhead per candidate | {overhead:.2f} s |")
    print(f"| overhead / this tiny proxy | {overhead / eval_s:.1%} |")
    print(f"| overhead / a {args.proxy_s:g} s proxy evaluation | {overhead / args.proxy_s:.3%} |")


if __name__ == "__main__":
    main()
