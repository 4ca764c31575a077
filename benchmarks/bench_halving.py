"""Successive halving against none: the same search (proposer, seed, space, data, proxy) run
twice side by side, once with `--halving-rungs 3 --halving-eta 3` and once without.

    python benchmarks/bench_halving.py                           # 4 rounds x 4, 240-step proxy
    python benchmarks/bench_halving.py --rounds 1 --steps 27 --samples 32   # a smoke run

Reported for each: candidates trained, how many reached the whole proxy run, training compute
(the candidates' MACs x steps x batch, as `diffnas compare` counts it), sampling compute for
the scores (every rung is scored), CPU-seconds of all evaluations, and the best whole-run proxy
score found. The random proposer draws the same candidates in both runs (it only avoids
duplicates), so the difference is what halving spends and what it keeps.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.experiments.compare import search_curve
from diffnas.experiments.compute import sampling_flops
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun


def run_search(config: SearchConfig, run_dir: Path) -> dict[str, float]:
    SearchRun(config, run_dir, console=Console(quiet=True)).run()
    curve = search_curve(run_dir, config)
    study = study_mod.open_study(run_dir)
    trials = [t for t in study.get_trials(deepcopy=False) if "round" in t.user_attrs]
    score = config.proxy.score
    # a trial is scored at each rung it reported, and once more when it ran the whole proxy
    scored = [(t, len(t.intermediate_values) + (t.state.name == "COMPLETE")) for t in trials]
    scorings = sum(n for _, n in scored)
    sample_flops = sum(
        n * sampling_flops(t.user_attrs["gmacs"] * 1e9, score.num_samples, score.steps or 1000)
        for t, n in scored
    )
    return {
        "trained": len(trials),
        "whole": sum(t.state.name == "COMPLETE" for t in trials),
        "scorings": scorings,
        "train_tflops": curve["training_flops"] / 1e12,
        "sample_tflops": sample_flops / 1e12,
        "cpu_s": sum(t.user_attrs.get("device_s", 0.0) for t in trials),
        "best": curve["final_best"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--rungs", type=int, default=3)
    parser.add_argument("--eta", type=int, default=3)
    args, _ = parser.parse_known_args()  # run.py passes its own arguments to every script
    proxy = EvalSpec(
        recipe="proxy",
        recipe_overrides={"steps": args.steps, "batch_size": args.batch},
        score=ScoreSpec(num_samples=args.samples, steps=20),
        device="cpu",
    )
    base = SearchConfig(
        space="tiny", data="digits", proposer="random", seed=0, rounds=args.rounds,
        per_round=args.per_round, promote=0, proxy=proxy, final=proxy,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_search(base, Path(tmp) / "plain")
        halving_cfg = base.model_copy(update={"halving_rungs": args.rungs, "halving_eta": args.eta})
        halving = run_search(halving_cfg, Path(tmp) / "halving")
    print(
        f"random proposer, seed 0, tiny space on digits, {args.rounds} rounds x "
        f"{args.per_round}, proxy {args.steps} steps x {args.batch}, RFID N={args.samples} S=20; "
        f"halving: {args.rungs} rungs, eta {args.eta}\n"
    )
    print("| measure | no halving | halving | halving / none |\n| --- | --- | --- | --- |")
    rows = [
        ("candidates trained", "trained", "{:.0f}"),
        ("trained the whole proxy run", "whole", "{:.0f}"),
        ("scorings (one per rung reached)", "scorings", "{:.0f}"),
        ("training compute (TFLOPs)", "train_tflops", "{:.3f}"),
        ("sampling compute for scores (TFLOPs)", "sample_tflops", "{:.3f}"),
        ("CPU-seconds of all evaluations", "cpu_s", "{:.0f}"),
        ("best whole-run RFID[classifier]", "best", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        a, b = plain[key], halving[key]
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")


if __name__ == "__main__":
    main()
