"""The cost of one proxy evaluation (train + sample + RFID) of a tiny candidate, as the search runs it.

    python benchmarks/bench_proxy_eval.py            # the `make demo` settings on digits
    python benchmarks/bench_proxy_eval.py --device cuda --steps 2000 --batch 128

The first call also trains the cached classifier and the reference statistics (once per
dataset); it is timed separately ("cold") from a second candidate ("warm").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from diffnas.data.datasets import DataSpec
from diffnas.execute.job import EvalJob, EvalSpec, ScoreSpec, evaluate_candidate
from diffnas.model.cost import measure_cost
from diffnas.space.references import get_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = get_reference("tiny-digits")
    spec = EvalSpec(
        recipe="proxy",
        recipe_overrides={"steps": args.steps, "batch_size": args.batch},
        score=ScoreSpec(num_samples=args.samples, steps=args.sampler_steps),
        device=args.device,
    )
    cost = measure_cost(arch)
    print(f"candidate tiny-digits: {cost.params_m:.2f} M params, {cost.gmacs:.4f} GMACs at 16x16")
    print(
        f"recipe: proxy, {args.steps} steps x {args.batch}; RFID N={args.samples}, DDIM-{args.sampler_steps}"
    )
    print("| run | wall s | train img/s | RFID |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cold (classifier + reference stats)", "warm (cached)"):
            job = EvalJob(
                arch=arch, objective="ddpm", data=DataSpec(kind="digits"), spec=spec,
                recipe=spec.train_recipe("ddpm", "digits"), seed=0,
                workdir=str(Path(tmp) / name.split()[0]), cache_dir=str(Path(tmp) / "cache"),
            )  # fmt: skip
            start = time.perf_counter()
            result = evaluate_candidate(job)
            wall = time.perf_counter() - start
            ips = result.train.get("images_per_sec") or 0
            print(f"| {name} | {wall:.1f} | {ips:.0f} | {result.score:.2f} |")


if __name__ == "__main__":
    main()
