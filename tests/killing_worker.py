"""A worker process that kills itself (SIGKILL) mid-candidate, for the executors' fault tests.

`python killing_worker.py KILLS WORKDIR`: the first KILLS processes started on WORKDIR begin
the evaluation, wait until training has written to `WORKDIR/train`, and die by SIGKILL as the
out-of-memory killer would; later ones run the real worker.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from diffnas.execute.worker import main

if __name__ == "__main__":
    kills, workdir = int(sys.argv[1]), Path(sys.argv[2])
    marker = workdir / "test-kills"
    done = int(marker.read_text()) if marker.exists() else 0
    if done < kills:
        marker.write_text(str(done + 1))
        threading.Thread(target=main, args=(str(workdir),), daemon=True).start()
        deadline = time.time() + 60
        while not (workdir / "train").exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(main(str(workdir)))
