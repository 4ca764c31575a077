"""Kendall's tau over a bootstrap's resamples: diffnas's batched tau-b against a loop of
`scipy.stats.kendalltau` calls, side by side on the same resamples, and that both give the
same values. Above 150 architectures `kendall_taus` itself loops over scipy (the pairwise
signs grow as n^2), so the last row shows the two the same.

Run: .venv/bin/python benchmarks/bench_ranks.py   (or `make bench`)
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import stats

from diffnas.ranks import kendall_taus


def scipy_loop(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resamples with a constant side: nan
        return np.array([stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args, _ = parser.parse_known_args()  # `make bench` passes its arguments to every script
    rng = np.random.default_rng(0)
    print(
        "| architectures | resamples | scipy loop s | batched s | speed-up | largest difference |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (4, 40, 200):
        proxy = rng.normal(size=n)
        reference = proxy + rng.normal(size=n)
        draws = rng.integers(0, n, size=(args.resamples, n))
        x, y = proxy[draws], reference[draws]
        kendall_taus(x[:2], y[:2])  # warm-up
        loop, batched = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine
            t0 = time.perf_counter()
            theirs = scipy_loop(x, y)
            loop.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = kendall_taus(x, y)
            batched.append(time.perf_counter() - t0)
        finite = np.isfinite(theirs)
        assert np.array_equal(finite, np.isfinite(ours))
        diff = float(np.max(np.abs(theirs[finite] - ours[finite])))
        a, b = min(loop), min(batched)
        print(f"| {n} | {args.resamples} | {a:.3f} | {b:.4f} | {a / b:.0f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
