"""`diffnas worker` on a real PostgreSQL study: two workers finish a queue, no candidate twice;
a worker killed mid-candidate loses nothing and has nothing done twice.

The session fixture starts a throwaway PostgreSQL cluster on loopback (Debian's `postgresql`
server: initdb + pg_ctl). Under CI (CI=true) a missing server or driver is a failure, not a
skip: `.ci/run` installs both.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from diffnas.data.datasets import DataSpec
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import WORKER_OUTPUT
from diffnas.runs import write_json
from procs import descendants, is_running
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
    # the form the README documents: diffnas picks the installed driver (psycopg2)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    sh(f"{bindir}/pg_ctl -D {data}/db -m immediate stop")
    shutil.rmtree(data, ignore_errors=True)


def tiny_job(tmp_path: Path, seed: int) -> EvalJob:
    return EvalJob(
        arch=ARCH, objective="ddpm", data=DataSpec(kind="digits", subset=64), spec=SPEC,
        recipe=SPEC.train_recipe("ddpm", "digits"),
        seed=seed, workdir=str(tmp_path / f"t{seed}"), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


def queue_with_two_workers(url: str, tmp_path: Path, study: str, jobs: int, grace_period: int):
    """`jobs` tiny candidates queued in a fresh study, and two `diffnas worker` processes on it."""
    from diffnas.execute.queue import enqueue_jobs, open_queue

    queued = [tiny_job(tmp_path, i) for i in range(jobs)]
    queue = open_queue(url, study_name=study)
    enqueue_jobs(queue, queued)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffnas", "worker", "--storage", url, "--study", study,
               "--heartbeat-interval", "1", "--grace-period", str(grace_period)]  # fmt: skip
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    return queue, queued, workers


def test_two_workers_finish_a_queue_with_no_candidate_done_twice(tmp_path, postgres_url) -> None:
    from optuna.trial import TrialState

    from diffnas.execute.queue import results

    queue, jobs, workers = queue_with_two_workers(
        postgres_url, tmp_path, "queue-two-workers", jobs=4, grace_period=30
    )
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


def test_stale_trials_are_requeued_and_a_late_result_is_told_once(tmp_path, postgres_url) -> None:
    """Claimants that vanish before their first heartbeat thread beats; one of them had
    finished its candidate (result.json in the shared job folder), the other comes back late."""
    from optuna.trial import TrialState

    from diffnas.execute.queue import (
        COPY_OF,
        claim,
        enqueue_jobs,
        open_queue,
        recover,
        tell_result,
        work,
    )

    jobs = [tiny_job(tmp_path, i) for i in range(2)]
    queue = open_queue(postgres_url, heartbeat_interval=1, grace_period=1, study_name="queue-stale")
    enqueue_jobs(queue, jobs)
    finished, late = claim(queue), claim(queue)  # no beat thread: both holders are gone
    left_behind = EvalResult(status="complete", score=12.5, device="cpu")
    Path(jobs[0].workdir).mkdir()
    write_json(Path(jobs[0].workdir) / "result.json", left_behind.model_dump(mode="json"))
    time.sleep(2.5)  # past the grace period (the database's clock decides)
    recover(queue, max_retry=2)  # what every worker does before it claims
    trials = queue.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2  # both re-queued
    copy_of = {t.system_attrs[COPY_OF]: t.number for t in trials[2:]}
    assert sorted(copy_of) == [finished.number, late.number]
    # the late holder's tell is refused: its trial is stale, its copy is told instead
    assert not tell_result(queue, late, EvalResult(status="complete", score=3.0))
    assert "result" not in queue.trials[late.number].user_attrs
    never = [sys.executable, "-c", "raise SystemExit(3)"]  # any evaluation started fails
    assert work(queue, command=never, max_retries=0, poll_s=0.1, log=lambda _: None) == 2
    copy = queue.trials[copy_of[finished.number]]
    assert copy.state == TrialState.COMPLETE and copy.value == 12.5  # taken, not evaluated again
    assert not (Path(jobs[0].workdir) / "worker.log").exists()
    late_copy = queue.trials[copy_of[late.number]]
    assert late_copy.state == TrialState.FAIL
    assert "exited with code 3" in json.loads(late_copy.user_attrs["result"])["error"]


def evaluation_children(pid: int) -> dict[int, str]:
    """pid -> job folder of the evaluation processes that process `pid` started, directly or
    through the warm launcher: the processes whose output goes to a job's worker.log."""
    found = {}
    for child in descendants(pid):
        try:
            output = Path(os.readlink(f"/proc/{child}/fd/1"))
        except OSError:
            continue  # gone meanwhile
        if output.name == WORKER_OUTPUT:
            found[child] = str(output.parent)
    return found


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_worker_killed_mid_candidate_loses_nothing_and_does_nothing_twice(
    tmp_path, postgres_url
) -> None:
    from optuna.trial import TrialState

    from diffnas.execute.queue import COPY_OF, results

    queue, jobs, workers = queue_with_two_workers(
        postgres_url, tmp_path, "queue-vanish", jobs=3, grace_period=3
    )
    try:

        def first_evaluation():
            for worker in workers:
                for child, workdir in evaluation_children(worker.pid).items():
                    return worker, child, workdir
            return None

        victim, child, workdir = until(first_evaluation, 60, "a worker to start an evaluation")
        # frozen mid-candidate, so it cannot finish before its worker dies
        os.kill(child, signal.SIGSTOP)
        assert not (Path(workdir) / "result.json").exists()
        victim.kill()  # SIGKILL: no clean-up, no last heartbeat, no tell
        victim.wait(timeout=30)
        # the evaluation dies with its worker (PR_SET_PDEATHSIG), stopped or not
        until(lambda: not is_running(child), 10, f"evaluation process {child} to die")
        survivor = next(w for w in workers if w is not victim)
        output = survivor.communicate(timeout=120)[0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert survivor.returncode == 0, output
    # the survivor did the two others and the vanished worker's candidate, re-queued
    assert output.strip().splitlines()[-1] == "worker: 3 candidate(s) evaluated", output
    trials = queue.get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3 + ["FAIL"]  # none left
    (stale,) = [t for t in trials if t.state == TrialState.FAIL]
    assert json.loads(stale.user_attrs["job"])["workdir"] == workdir
    assert "result" not in stale.user_attrs  # the killed worker told nothing
    (copy,) = [t for t in trials if COPY_OF in t.system_attrs]
    assert copy.system_attrs[COPY_OF] == stale.number
    assert "vanished" in stale.user_attrs["reason"]  # why it failed, in the queue study
    assert copy.state == TrialState.COMPLETE and copy.user_attrs["job"] == stale.user_attrs["job"]
    for job in jobs:  # each candidate finished by exactly one evaluation process
        lines = (Path(job.workdir) / "worker.jsonl").read_text().splitlines()
        assert len(lines) == 1, job.workdir
    found = results(queue)
    assert sorted(found) == sorted(j.workdir for j in jobs)
    assert all(r["status"] == "complete" for r in found.values())


def test_a_search_on_the_queue_is_evaluated_by_two_workers(tmp_path, postgres_url) -> None:
    from diffnas.execute.job import EvalSpec, ScoreSpec
    from diffnas.execute.queue import QueueExecutor
    from diffnas.search import study as study_mod
    from diffnas.search.config import SearchConfig
    from diffnas.search.loop import SearchRun

    study = "queue-search"
    command = [sys.executable, "-m", "diffnas", "worker", "--storage", postgres_url,
               "--study", study, "--heartbeat-interval", "1", "--grace-period", "30", "--wait"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # lines before SIGTERM
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    proxy = EvalSpec(
        recipe="proxy", recipe_overrides={"steps": 8, "batch_size": 8},
        score=ScoreSpec(num_samples=16, steps=2, batch_size=16), device="cpu",
    )  # fmt: skip
    config = SearchConfig(
        space="tiny", data="digits", data_subset=200, proposer="random", rounds=1, per_round=4,
        promote=0, proxy=proxy, final=proxy, executor="queue",
    )  # fmt: skip
    executor = QueueExecutor(postgres_url, study_name=study, poll_s=0.2)
    try:
        summary = SearchRun(config, tmp_path / "run", executor=executor).run()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=60)[0] for w in workers]
    memory = study_mod.load_memory(study_mod.open_study(tmp_path / "run"))
    assert summary["status_counts"] == {"complete": 4}
    for t in memory:  # evaluated by a worker, once, in the run folder, told to the search
        folder = tmp_path / "run" / "trials" / f"{t.number:05d}"
        assert len((folder / "worker.jsonl").read_text().splitlines()) == 1
        assert t.score == json.loads((folder / "result.json").read_text())["score"]
    evaluated = [line for out in outputs for line in out.splitlines() if "evaluating" in line]
    assert len(evaluated) == 4, outputs


def fresh_database(url: str, name: str) -> str:
    """A new, empty database on the test server: `url` with `name` as its database."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
    )
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


def vanish(queue, seconds: float = 2.5):
    """A worker claims the oldest queued candidate and vanishes before its first beat thread
    runs; `seconds` later (past a 1 s grace period) its trial is stale."""
    from diffnas.execute.queue import claim

    trial = claim(queue)
    assert trial is not None
    time.sleep(seconds)
    return trial


def test_workers_started_at_once_on_a_new_database_all_start(tmp_path, postgres_url) -> None:
    """Several workers opening one new database at the same moment race to create Optuna's
    schema (PostgreSQL refuses all but one `CREATE TYPE`): each must come up, none die."""
    url = fresh_database(postgres_url, "schema_race")
    script = (
        "import sys, time, pathlib\n"
        "from diffnas.execute.queue import open_queue\n"
        "ready = pathlib.Path(sys.argv[1]); ready.joinpath(sys.argv[2]).touch()\n"
        "while len(list(ready.iterdir())) < int(sys.argv[3]): time.sleep(0.001)\n"
        "open_queue(sys.argv[4], create=False)\n"
        "print('up')\n"
    )
    ready = tmp_path / "ready"
    ready.mkdir()
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ready), str(i), str(n), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(n)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err[-2000:] for _, err in outputs]
    assert all(out.strip() == "up" for out, _ in outputs)


def test_a_candidate_out_of_retries_fails_with_its_reason(tmp_path, postgres_url) -> None:
    """Re-queued --max-retry times, a candidate ends FAIL with the reason in the queue study,
    and the search that queued it is told `failed` with that reason."""
    from optuna.trial import TrialState

    from diffnas.execute.queue import (
        COPY_OF,
        QueueExecutor,
        enqueue_jobs,
        open_queue,
        recover,
    )

    queue = open_queue(postgres_url, heartbeat_interval=1, grace_period=1, study_name="q-retry")
    job = tiny_job(tmp_path, 0)
    enqueue_jobs(queue, [job])
    for _ in range(2):  # the first holder and its one copy both vanish
        vanish(queue)
        recover(queue, max_retry=1)
    trials = queue.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2  # no third attempt
    first, last = trials
    assert last.system_attrs[COPY_OF] == first.number
    assert "attempt 1; re-queued" in first.user_attrs["reason"]
    assert "attempt 2; no retry left" in last.user_attrs["reason"]
    executor = QueueExecutor(postgres_url, study_name="q-retry", max_retries=1)
    outcome = executor._outcome(trials)
    executor.close()
    assert outcome is not None and outcome.status == "failed"
    assert "no retry left" in outcome.error and f"{first.number}, {last.number}" in outcome.error


def test_a_worker_killed_between_the_stale_mark_and_the_requeue_loses_nothing(
    tmp_path, postgres_url
) -> None:
    """A worker marks a vanished worker's trial stale and is SIGKILLed before it re-queues it:
    the next worker re-queues it and the candidate is evaluated exactly once. Two workers that
    re-queued it at the same moment (two copies) still get it evaluated once."""
    import optuna
    from optuna.trial import TrialState

    from diffnas.execute.queue import COPY_OF, DUPLICATE, enqueue_jobs, open_queue

    study = "q-kill-between"
    queue = open_queue(postgres_url, heartbeat_interval=1, grace_period=1, study_name=study)
    job = tiny_job(tmp_path, 0)
    enqueue_jobs(queue, [job])
    stale = vanish(queue)
    killed = (
        "import os, signal, sys\n"
        "from diffnas.execute.queue import mark_stale, open_queue\n"
        "queue = open_queue(sys.argv[1], heartbeat_interval=1, grace_period=1, "
        "study_name=sys.argv[2], create=False)\n"
        "assert mark_stale(queue, max_retry=2) == [int(sys.argv[3])]\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # before its re-queue step\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", killed, postgres_url, study, str(stale.number)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (marked,) = queue.get_trials()
    assert marked.state == TrialState.FAIL and "vanished" in marked.user_attrs["reason"]
    # two copies, as two workers re-queueing it at the same moment would leave
    copy = {"job": marked.user_attrs["job"]}
    for _ in range(2):
        queue.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                user_attrs=copy,
                system_attrs={COPY_OF: marked.number, "retry_history": [marked.number]},
            )  # fmt: skip
        )
    worker = subprocess.run(
        [sys.executable, "-m", "diffnas", "worker", "--storage", postgres_url, "--study", study,
         "--heartbeat-interval", "1", "--grace-period", "30"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert worker.stdout.strip().splitlines()[-1] == "worker: 1 candidate(s) evaluated"
    trials = queue.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    assert trials[2].user_attrs[DUPLICATE] == trials[1].number  # failed, never evaluated
    lines = (Path(job.workdir) / "worker.jsonl").read_text().splitlines()
    assert len(lines) == 1  # evaluated exactly once


def tiny_search_config(storage: str, seed: int):
    from diffnas.execute.job import EvalSpec, ScoreSpec
    from diffnas.search.config import SearchConfig

    proxy = EvalSpec(
        recipe="proxy", recipe_overrides={"steps": 4, "batch_size": 4},
        score=ScoreSpec(num_samples=8, steps=2, batch_size=8), device="cpu",
    )  # fmt: skip
    return SearchConfig(
        space="tiny", data="digits", data_subset=100, proposer="random", rounds=1, per_round=2,
        promote=0, proxy=proxy, final=proxy, storage=storage, seed=seed,
    )  # fmt: skip


def test_two_searches_on_one_database_each_report_their_own_trials(tmp_path, postgres_url) -> None:
    """Each run folder gets a study of its own in a shared --storage: the second search trains
    its own candidates and `status`/`report` show each search only its own."""
    from diffnas.gate.entry import RoundFile
    from diffnas.report.source import load_search
    from diffnas.search.loop import SearchRun
    from diffnas.storage import resolve_url, study_names

    url = fresh_database(postgres_url, "two_searches")
    runs = [tmp_path / "runs" / f"0000{i}-search" for i in range(2)]
    summaries = [
        SearchRun(tiny_search_config(url, seed), run_dir).run() for seed, run_dir in enumerate(runs)
    ]
    assert [s["trials"] for s in summaries] == [2, 2]
    assert [s["status_counts"] for s in summaries] == [{"complete": 2}] * 2
    names = [json.loads((r / "options.json").read_text())["study_name"] for r in runs]
    assert len(set(names)) == 2 and sorted(study_names(resolve_url(url))) == sorted(names)
    for run_dir in runs:
        record = load_search(run_dir)  # what `diffnas status` and `report` read
        proposed = RoundFile.read(run_dir / "rounds" / "round-000.json")
        assert [t.arch for t in record.trials] == [e.arch for e in proposed.entries]
        for t in record.trials:  # each score is this search's own evaluation of that trial
            result = json.loads(
                (run_dir / "trials" / f"{t.number:05d}" / "result.json").read_text()
            )
            assert t.proxy is not None and t.proxy.value == result["score"]
    # a resumed search finds its own study again (its name is in its options.json)
    again = SearchRun(tiny_search_config(url, 0), runs[0]).run()
    assert again["trials"] == 2
