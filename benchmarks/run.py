"""Run every benchmark (bench_*.py) in this folder on this machine's CPU, one after another.

`make bench` calls this. Each script prints a Markdown table; copy the figures into
RESULTS.md with the date and the machine. `bench_train.py` names the CPU (and whether it has
native bf16) and ends with the verdicts against the training bars: `diffnas train` with
default options ≥ 1.2× a plain diffusers loop on a CPU with native bf16, ≥ 1.0× without.
GPU figures: run a script with `--device cuda`.

`bench_screening.py` is a study, not a timing: 100 searches of the embedded LLM, hours on a
CPU (benchmarks/RESULTS.md, *Screening and warm start*). It is left out here; run it by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
STUDIES = {"bench_screening.py"}  # hours of searches: run by hand, not by `make bench`


def main() -> int:
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if script.name in STUDIES:
            print(f"\n## {script.name}: a study of hours, run it by hand\n", flush=True)
            continue
        print(f"\n## {script.name}\n", flush=True)
        failures += subprocess.call([sys.executable, str(script), *sys.argv[1:]]) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
