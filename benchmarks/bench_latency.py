"""MACs against measured latency: how well the compute count ranks what a forward pass costs.

Draws N distinct architectures of a space (uniformly, inside its budget or not), counts their
MACs (`diffnas.model.cost`) and times one forward pass of each as the search's sampler runs it
(`diffnas.train.latency.measure_latency`: eval, no grad, the sampler's dtype, warm-up then the
median of R passes). Each architecture is timed in several rounds, in a new random order each
round, and its latency is the median of its rounds' medians, so a burst of load on a shared
machine hits every architecture alike. Prints, per batch size, Spearman's rho between GMACs and
latency (scipy) and the worst pairs where the architecture with more MACs is faster.

Run: .venv/bin/python benchmarks/bench_latency.py   (or `make bench`; GPU: --device cuda)
Smoke: .venv/bin/python benchmarks/bench_latency.py --archs 3 --rounds 1 --runs 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

from diffnas.model.cost import measure_cost
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import load_space
from diffnas.train.latency import LatencyOptions, device_name, measure_latency


def distinct_archs(space_name: str, n: int, seed: int) -> list[ArchConfig]:
    space = load_space(space_name)
    rng = random.Random(seed)
    archs: dict[str, ArchConfig] = {}
    for _ in range(100 * n):
        arch = space.sample(rng)
        archs.setdefault(arch.key(), arch)
        if len(archs) == n:
            break
    return list(archs.values())


def worst_pairs(gmacs: list[float], ms: list[float], k: int) -> list[tuple[float, int, int]]:
    """(slowdown, i, j): i has fewer MACs than j yet is slower, by the factor ms[i] / ms[j]."""
    pairs = [
        (ms[i] / ms[j], i, j)
        for i in range(len(ms))
        for j in range(len(ms))
        if gmacs[i] < gmacs[j] and ms[i] > ms[j]
    ]
    return sorted(pairs, reverse=True)[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--archs", type=int, default=60, help="distinct architectures (>= 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="timed passes per round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all architectures")
    parser.add_argument("--pairs", type=int, default=5, help="worst pairs shown")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()

    archs = distinct_archs(args.space, args.archs, args.seed)
    gmacs = [measure_cost(a).gmacs for a in archs]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{len(archs)} architectures of {args.space!r} (seed {args.seed}); "
        f"{device_name(args.device)}; torch {torch.__version__}; {platform.platform()}; "
        f"load average before: {load}"
    )
    out = {"space": args.space, "archs": [a.model_dump() for a in archs], "gmacs": gmacs}
    rng = random.Random(args.seed)
    for batch in (int(b) for b in args.batch.split(",")):
        options = LatencyOptions(
            device=args.device, dtype=args.dtype, batch=batch, threads=args.threads,
            warmup=args.warmup, runs=args.runs,
        )  # fmt: skip
        settings = options.resolve(default_device=args.device)
        per_round: list[list[float]] = [[] for _ in archs]
        start = time.perf_counter()
        for _ in range(args.rounds):
            order = list(range(len(archs)))
            rng.shuffle(order)
            for i in order:
                per_round[i].append(measure_latency(archs[i], settings).ms)
        ms = [statistics.median(r) for r in per_round]
        rho = spearmanr(gmacs, ms)
        tau = kendalltau(gmacs, ms)
        print(
            f"\n### batch {batch}: {settings.conditions()}, {time.perf_counter() - start:.0f} s\n"
        )
        print(
            "| archs | Spearman rho (p) | Kendall tau | GMACs range | ms range | ms per GMAC range |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        per_gmac = [m / g for m, g in zip(ms, gmacs)]
        print(
            f"| {len(archs)} | {rho.statistic:+.3f} ({rho.pvalue:.2g}) | {tau.statistic:+.3f} "
            f"| {min(gmacs):.3g}-{max(gmacs):.3g} | {min(ms):.3g}-{max(ms):.3g} "
            f"| {min(per_gmac):.3g}-{max(per_gmac):.3g} |"
        )
        print("\nWorst pairs where more MACs are faster:\n")
        print("| fewer MACs (slower) | GMACs | ms | more MACs (faster) | GMACs | ms | slowdown |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for slowdown, i, j in worst_pairs(gmacs, ms, args.pairs):
            print(
                f"| {archs[i].summary()} | {gmacs[i]:.3g} | {ms[i]:.3g} | {archs[j].summary()} "
                f"| {gmacs[j]:.3g} | {ms[j]:.3g} | {slowdown:.2f}x |"
            )
        out[f"batch_{batch}"] = {
            "settings": settings.model_dump(),
            "ms": ms,
            "rounds_ms": per_round,
            "spearman": [rho.statistic, rho.pvalue],
            "kendall": [tau.statistic, tau.pvalue],
        }
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
