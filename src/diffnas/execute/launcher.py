"""Worker processes started warm: forked from a launcher that has imported the heavy modules once.

A fresh `python -m diffnas.execute.worker WORKDIR` spends about 4 s of CPU importing torch,
diffusers (which pulls in torch._dynamo and scipy.stats) and the data loaders before its
first training step: as long as a whole short proxy run on the CPU, and paid again by every
job, rung and retry. The launcher (`serve()` below, one per executor process, started on
first use) imports them once and forks each job's process from that state. A job keeps what
a fresh process gave it - its own memory, its own exit status (a SIGKILL is seen as one), its
whole environment (device pinning and thread counts), its output in WORKDIR/worker.log - and
starts in milliseconds.

Forking is safe because the launcher only imports: one thread, no thread pool, and no GPU
(it sees none). Only jobs that see no GPU either start from it (`available`), so a job sets
its threads before any pool exists, as a fresh worker does; GPU jobs, and every job where
fork is not available (Windows), start as fresh processes. Nothing outlives the executor:
the launcher ends when its stdin closes (the executor's process ended, however it ended) and
each job is killed with the launcher (PR_SET_PDEATHSIG).

Protocol, one JSON object per line: the executor sends {"id", "workdir", "env", "log"}; the
launcher answers {"id", "pid"} when it forked the job and {"pid", "code"} when the job ended
(`code` as `subprocess` reports it: negative for the signal that ended it).
"""

from __future__ import annotations

import glob
import importlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import setproctitle

from diffnas.childproc import die_with_parent
from diffnas.execute import worker

# What a job imports on its way (job.py: torch and diffusers; the bundled digits: sklearn)
PRELOAD = ("diffnas.execute.worker", "diffnas.execute.job", "sklearn.datasets", "PIL.Image")
SWITCH = "DIFFNAS_WARM_WORKERS"  # 0: every job starts as a fresh process (to compare, or debug)
REAP_S = 0.05  # how often the launcher looks for ended jobs while no request comes
LAUNCHER_GONE = -9  # a job's code when the launcher died under it (its jobs die with it)


def available(env: dict[str, str]) -> bool:
    """Whether a job with environment `env` may start warm: where the platform forks (Linux,
    macOS), DIFFNAS_WARM_WORKERS is not 0, and the job can see no GPU - `CUDA_VISIBLE_DEVICES`
    empty (a CPU worker of the pool or Ray) or no GPU device on the machine. A GPU job starts
    as a fresh process: a CUDA driver does not survive a fork, and its seconds of imports are
    small beside a GPU run."""
    if not hasattr(os, "fork") or sys.platform == "win32" or os.environ.get(SWITCH) == "0":
        return False
    if env.get("CUDA_VISIBLE_DEVICES") == "":
        return True
    return not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd")


@dataclass
class _Server:
    """One launcher process and the jobs asked of it: when it dies, only these are lost (a
    launcher started after it keeps its own)."""

    proc: subprocess.Popen
    started: dict[int, Future[Future[int]]] = field(default_factory=dict)  # request -> end
    ended: dict[int, Future[int]] = field(default_factory=dict)  # a forked job's pid -> code


class Launcher:
    """The executor's side: starts the launcher process on first use (again if it died) and
    hands out each job's exit code to the thread that asked for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._ids = itertools.count()

    def run(self, workdir: str | Path, env: dict[str, str], log: str | Path) -> int:
        """Evaluate `workdir/job.json` in a forked process with `env` as its whole
        environment and its output appended to `log`; its exit code."""
        started: Future[Future[int]] = Future()  # resolves to the job's end when it is forked
        with self._lock:
            server = self._running()
            request_id = next(self._ids)
            server.started[request_id] = started
            line = {"id": request_id, "workdir": str(workdir), "env": env, "log": str(log)}
            try:
                server.proc.stdin.write((json.dumps(line) + "\n").encode())  # type: ignore[union-attr]
                server.proc.stdin.flush()  # type: ignore[union-attr]
            except OSError:  # the launcher died a moment ago; its reader clears up after it
                server.started.pop(request_id, None)
                return LAUNCHER_GONE
        return started.result().result()

    def _running(self) -> _Server:
        if self._server is None or self._server.proc.poll() is not None:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from diffnas.execute.launcher import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no import may touch a GPU
            )
            self._server = _Server(proc)
            threading.Thread(
                target=self._read, args=(self._server,), name="diffnas-launcher", daemon=True
            ).start()
        return self._server

    def _read(self, server: _Server) -> None:
        for raw in server.proc.stdout:  # type: ignore[union-attr]
            message = json.loads(raw)
            with self._lock:
                if "id" in message:
                    ended: Future[int] = Future()
                    server.ended[message["pid"]] = ended
                    server.started.pop(message["id"]).set_result(ended)
                else:
                    server.ended.pop(message["pid"]).set_result(message["code"])
        server.proc.wait()  # the launcher ended, and every job it had forked with it
        with self._lock:
            if self._server is server:
                self._server = None
            gone: Future[int] = Future()
            gone.set_result(LAUNCHER_GONE)
            for started in server.started.values():
                started.set_result(gone)
            for ended in server.ended.values():
                ended.set_result(LAUNCHER_GONE)
            server.started.clear()
            server.ended.clear()


_launcher = Launcher()


def run_warm(workdir: str | Path, env: dict[str, str], log: str | Path) -> int:
    """`workdir/job.json` evaluated in a process forked from this executor's launcher."""
    return _launcher.run(workdir, env, log)


def serve() -> None:
    """The launcher process: import, then fork a job per request until stdin closes."""
    # the answers go out on a copy of stdout; stdout itself goes to stderr, so nothing an
    # import prints can garble them
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # Ctrl-C reaches the whole process group: the executor decides what it means, and the
    # launcher goes when the executor does (its stdin closes), not before its jobs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        importlib.import_module(name)
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], REAP_S)
        if ready:
            chunk = os.read(0, 1 << 16)
            if not chunk:  # the executor's process ended: its jobs end with this process
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                launcher = os.getpid()
                pid = os.fork()
                if pid == 0:
                    answers.close()
                    _job(request, launcher)  # never returns
                _send(answers, {"id": request["id"], "pid": pid})
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _send(answers, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(answers: Any, message: dict[str, Any]) -> None:
    answers.write(json.dumps(message) + "\n")
    answers.flush()


def _job(request: dict[str, Any], launcher: int) -> None:
    """A forked job: killed with the launcher, given the environment and output a fresh
    worker would have, ended with `os._exit` (never back into the launcher's loop)."""
    code = 1
    try:
        started = time.time()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh process has it
        die_with_parent()
        if os.getppid() != launcher:  # the launcher ended before the line above took effect
            return
        # in `ps` and /proc/PID/cmdline, the command line a fresh worker has
        setproctitle.setproctitle(" ".join([*worker.WORKER_COMMAND, request["workdir"]]))
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        code = worker.main(request["workdir"], started=started)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
