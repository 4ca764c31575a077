"""How long counting one candidate's cost takes (meta-device build + FlopCounterMode forward).

Run: .venv/bin/python benchmarks/bench_cost.py   (or `make bench`)
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from diffnas.model.cost import measure_cost
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="random candidates per space")
    args = parser.parse_args()
    measure_cost(get_reference("tiny-digits"))  # warm-up: imports and first-call dispatch
    print("| what | median s | max s | n |")
    print("| --- | --- | --- | --- |")
    for name in ("ddpm-cifar10", "iddpm-cifar10"):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            measure_cost(get_reference(name))
            times.append(time.perf_counter() - t0)
        print(f"| reference {name} | {statistics.median(times):.3f} | {max(times):.3f} | 5 |")
    for space_name in ("cifar10-iddpm", "tiny"):
        space = load_space(space_name)
        rng = random.Random(0)
        times = []
        for _ in range(args.samples):
            arch = space.sample(rng)
            t0 = time.perf_counter()
            measure_cost(arch)
            times.append(time.perf_counter() - t0)
        print(
            f"| random candidates of {space_name} | {statistics.median(times):.3f} | {max(times):.3f} | {args.samples} |"
        )


if __name__ == "__main__":
    main()
