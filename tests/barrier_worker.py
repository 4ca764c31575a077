"""A worker process that evaluates only once `PARTIES` workers have started, for the executors'
concurrency check.

`python barrier_worker.py ROOT PARTIES WORKDIR`: records its arrival under ROOT, waits until
PARTIES workers have arrived there (up to 120 s), then runs the real worker. An executor that
runs candidates one after another never gets the first one past the barrier: it exits with
code 3 and names the wait, which the check reports. Timing-free, unlike comparing spans.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from diffnas.execute.worker import main

if __name__ == "__main__":
    root, parties, workdir = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"arrived-{os.getpid()}").touch()
    deadline = time.time() + 120
    while len(list(root.glob("arrived-*"))) < parties:
        if time.time() > deadline:
            print(f"barrier: {parties} workers never ran at once", file=sys.stderr)
            sys.exit(3)
        time.sleep(0.05)
    sys.exit(main(workdir))
