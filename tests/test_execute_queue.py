"""`diffnas worker` on a real PostgreSQL study: two workers finish a queue, no candidate twice.

The session fixture starts a throwaway PostgreSQL cluster on loopback (Debian's `postgresql`
server: initdb + pg_ctl). Under CI (CI=true) a missing server or driver is a failure, not a
skip: `.ci/run` installs both.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from diffnas.data.datasets import DataSpec
from diffnas.execute.job import EvalJob
from tiny_models import TINY_JOB_ARCH as ARCH
from tiny_models import TINY_JOB_SPEC as SPEC


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("psycopg2 is not installed (pip install -e '.[postgres]')")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _missing("no PostgreSQL server (apt-get install -y postgresql)")
    bindir = Path(bins[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="diffnas-pg-"))
    port = _free_port()
    as_root = os.geteuid() == 0

    def sh(command: str) -> None:
        args = ["su", "postgres", "-c", command] if as_root else ["bash", "-c", command]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    if as_root:
        shutil.chown(data, "postgres")
    sh(f"{bindir}/initdb -D {data}/db -U postgres --auth=trust")
    sh(
        f"{bindir}/pg_ctl -D {data}/db -l {data}/log -w "
        f"-o '-p {port} -k /tmp -c listen_addresses=127.0.0.1' start"
    )
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    sh(f"{bindir}/pg_ctl -D {data}/db -m immediate stop")
    shutil.rmtree(data, ignore_errors=True)


def test_two_workers_finish_a_queue_with_no_candidate_done_twice(tmp_path, postgres_url) -> None:
    from optuna.trial import TrialState

    from diffnas.execute.queue import enqueue_jobs, open_queue, results

    jobs = [
        EvalJob(arch=ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64), spec=SPEC,
                recipe=SPEC.train_recipe("ddpm", "digits"),
                seed=i, workdir=str(tmp_path / f"t{i}"), cache_dir=str(tmp_path / "cache"))
        for i in range(4)
    ]  # fmt: skip
    queue = open_queue(postgres_url, study_name="queue-two-workers")
    enqueue_jobs(queue, jobs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffnas", "worker", "--storage", postgres_url,
               "--study", "queue-two-workers", "--heartbeat-interval", "1", "--grace-period", "30"]  # fmt: skip
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    counts = [int(out.strip().splitlines()[-1].split()[1]) for out in outputs]
    assert sum(counts) == 4 and all(c >= 1 for c in counts), outputs  # both took work
    trials = queue.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for job in jobs:  # each candidate evaluated by exactly one worker process
        lines = (Path(job.workdir) / "worker.jsonl").read_text().splitlines()
        assert len(lines) == 1
    found = results(queue)
    assert sorted(found) == sorted(j.workdir for j in jobs)
    assert all(r["status"] == "complete" for r in found.values())
    assert len({json.dumps(r["score"]) for r in found.values()}) == 4  # four seeds, four scores
