"""Figures a `diffnas compare` against a table leaves implicit, for benchmarks/RESULTS.md.

    python benchmarks/study_figures.py runs/00008-compare-micro [--setting s400-loss]

`compare` already gives each proposer's regret, evaluations to the top 1 / top 3 and
P(A beats B). This adds, from the same folder and the table:
- the difference in regret between two proposers, paired by seed (the table's lookups draw
  the same seed for the same architecture under the same search seed), with compare's own
  bootstrap interval: `--pair diffnas,llm-no-memory` (the memory's effect) by default;
- how many distinct architectures each proposer evaluated, per search and over all seeds
  (how far it explores);
- the LLM's calls and tokens per search (from each search's summary.json);
- the parameter-count baseline: no search at all, the largest architecture in the table
  (regret), and evaluations to the top 1 / top 3 when the table is evaluated largest first;
- random search uniform over the table's distinct architectures (the `random` proposer is
  uniform over each dimension's choices, so architectures with more encodings come up more
  often): `--draws` simulated searches of the same budget, each evaluation a lookup of one
  recorded seed drawn at random, handing back its best by `--setting`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from math import comb
from pathlib import Path
from statistics import mean

import numpy as np

from diffnas.execute.table import Table
from diffnas.experiments.regret import mean_interval
from diffnas.space.arch import ArchConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `diffnas compare` run folder")
    parser.add_argument("--pair", default="diffnas,llm-no-memory")
    parser.add_argument("--setting", default="s400-loss", help="the proxy the searches used")
    parser.add_argument("--draws", type=int, default=20_000)
    args = parser.parse_args()

    compare = json.loads((args.run / "compare.json").read_text())
    searches = compare["judged"]["searches"]
    table = Table.load(compare["judged"]["table"])
    budget = compare["rounds"] * compare["per_round"]

    by_proposer: dict[str, dict[int, dict]] = defaultdict(dict)
    for name, row in searches.items():
        proposer, seed = name.rsplit("-seed", 1)
        by_proposer[proposer][int(seed)] = row

    print(
        "| proposer | distinct archs per search | distinct over all seeds | LLM calls "
        "per search | prompt + completion tokens per search |"
    )
    print("| --- | --- | --- | --- | --- |")
    for proposer, rows in by_proposer.items():
        per_search, union, calls, tokens = [], set(), [], []
        for seed in rows:
            folder = args.run / f"{proposer}-seed{seed}"
            summary = json.loads((folder / "summary.json").read_text())
            ids = {
                ArchConfig(**json.loads(job.read_text())["arch"]).arch_hash()
                for job in folder.glob("trials/*/job.json")
            }
            per_search.append(len(ids))
            union |= ids
            llm = summary.get("llm") or {}
            calls.append(llm.get("calls", 0))
            tokens.append((llm.get("prompt_tokens", 0), llm.get("completion_tokens", 0)))
        tok = (
            f"{mean(t[0] for t in tokens):,.0f} + {mean(t[1] for t in tokens):,.0f}"
            if any(calls)
            else "-"
        )
        print(f"| {proposer} | {mean(per_search):.1f} | {len(union)} | {mean(calls):.1f} | {tok} |")

    left, right = args.pair.split(",")
    seeds = sorted(set(by_proposer[left]) & set(by_proposer[right]))
    diff = mean_interval(
        by_proposer[left][s]["regret"] - by_proposer[right][s]["regret"] for s in seeds
    )
    print(
        f"\nregret {left} - {right}, paired over {len(seeds)} seeds: "
        f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
    )

    reference = table.mean_scores()
    order = sorted(reference, key=reference.get)
    _, optimum = table.optimum()
    params = {arch_id: table.meta.archs[arch_id].params for arch_id in reference}
    largest_first = sorted(params, key=lambda a: (-params[a], a))
    first = largest_first[0]
    print(
        f"parameter count alone: the largest architecture {first} "
        f"({params[first] / 1e6:.2f} M) has regret {reference[first] - optimum:.2f}; "
        f"evaluated largest first, the top 1 comes at evaluation "
        f"{largest_first.index(order[0]) + 1} and the first of the top 3 at "
        f"{min(largest_first.index(a) for a in order[:3]) + 1}"
    )

    proxy = table.values(args.setting)
    archs = sorted(set(proxy) & set(reference))
    rng = np.random.default_rng(0)
    regrets, found = [], 0
    for _ in range(args.draws):
        picked = rng.choice(len(archs), size=budget, replace=False)
        scored = [(rng.choice(list(proxy[archs[i]].values())), archs[i]) for i in picked]
        regrets.append(reference[min(scored)[1]] - optimum)
        found += any(archs[i] in order[:3] for i in picked)
    print(
        f"uniform random over the {len(archs)} architectures, {budget} evaluations, "
        f"{args.draws} simulated searches by {args.setting}: regret {mean(regrets):.2f}, "
        f"a top-3 architecture evaluated in {found / args.draws:.1%} of searches "
        f"(closed form {1 - _none_of_top3(len(archs), budget):.1%})"
    )


def _none_of_top3(n: int, k: int) -> float:
    """P(k draws without replacement from n miss 3 given items) = C(n-3, k) / C(n, k)."""
    return comb(n - 3, k) / comb(n, k)


if __name__ == "__main__":
    main()
