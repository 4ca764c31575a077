"""A worker process that kills itself (SIGKILL) mid-candidate, for the executors' fault tests.

`python killing_worker.py KILLS WORKDIR`: the first KILLS processes started on WORKDIR begin
the evaluation, wait until training has written to `WORKDIR/train`, and die by SIGKILL as the
out-of-memory killer would; later ones run the real worker.
`python killing_worker.py KILLS now WORKDIR`: they die by SIGKILL at once, before importing
torch (a check of the retry limit needs the deaths, not seconds of training before each).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

if __name__ == "__main__":
    kills, at_once, workdir = int(sys.argv[1]), sys.argv[2] == "now", Path(sys.argv[-1])
    marker = workdir / "test-kills"
    done = int(marker.read_text()) if marker.exists() else 0
    killed = done < kills
    if killed:
        marker.write_text(str(done + 1))
        if at_once:  # before the import below: the package diffnas.execute imports torch
            os.kill(os.getpid(), signal.SIGKILL)
    from diffnas.execute.worker import main

    if killed:  # mid-candidate: once training has written to WORKDIR/train
        threading.Thread(target=main, args=(str(workdir),), daemon=True).start()
        deadline = time.time() + 60
        while not (workdir / "train").exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(main(str(workdir)))
