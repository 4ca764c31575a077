"""The parent's side of the local model's process (`local_worker.py`): start it, talk to it
over JSON lines, notice when it dies, hangs or garbles, and stop it.

Every such failure is a `WorkerFault` whose message says how the child ended (in the words of
`diffnas.childproc.describe_exit`) and the last lines it logged; `LocalBackend` retries it with
a fresh worker. Nothing here knows about LLM requests beyond passing a JSON object through.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

from diffnas.childproc import describe_exit

WORKER_MODULE = "diffnas.propose.llm.local_worker"
#: Loading gets at least this long, whatever the per-request timeout (a cold disk is slow).
MIN_LOAD_TIMEOUT_S = 60.0
#: How long a worker may take to exit after its stdin is closed before it is killed.
CLOSE_GRACE_S = 5.0
LOG_TAIL_LINES = 6
LOG_TAIL_CHARS = 600


class WorkerFault(Exception):
    """The worker process failed; the message says how (signal, timeout, garbage, error)."""


def llama_system_info(timeout_s: float = MIN_LOAD_TIMEOUT_S) -> str:
    """llama.cpp's CPU features (`CPU : AVX2 = 1 | ...`), asked in a child process.

    Raises `WorkerFault` when the child cannot tell (llama.cpp missing, or crashing on import).
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE, "--system-info"],
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise WorkerFault(f"llama.cpp did not report its features within {timeout_s:g} s") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise WorkerFault(f"llama.cpp {describe_exit(done.returncode)}: {' '.join(tail)}")
    try:
        return str(json.loads(done.stdout)["system_info"]).strip()
    except (ValueError, KeyError, TypeError):
        raise WorkerFault(f"llama.cpp printed {done.stdout[:120]!r}") from None


class LocalWorker:
    """One `local_worker` child: started and loaded on construction, one request at a time."""

    def __init__(self, model_path: Path, n_ctx: int, load_timeout_s: float) -> None:
        command = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--model",
            str(model_path),
            "--n-ctx",
            str(n_ctx),
            "--parent-pid",
            str(os.getpid()),
        ]
        # PR_SET_PDEATHSIG fires when the starting *thread* ends, so only the main thread asks
        # for it; the worker also polls its parent pid, which covers every other case.
        if threading.current_thread() is threading.main_thread():
            command.append("--die-with-parent")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.pid = self.proc.pid
        self._pending = b""
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._log_reader = threading.Thread(
            target=_keep_tail, args=(self.proc.stderr, self._log), daemon=True
        )
        self._log_reader.start()
        # Closes the worker when this object is dropped and at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop, self.proc)
        ready = self._reply(load_timeout_s, while_doing="loading the model")
        if not ready.get("ok") or not ready.get("ready"):
            self.close()
            self._log_reader.join(timeout=1.0)  # let llama.cpp's reason arrive
            raise WorkerFault(
                f"could not load the model: {ready.get('error', ready)}{self._log_tail()}"
            )
        self.system_info = str(ready.get("system_info", ""))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its reply; a fault leaves the worker stopped."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(payload).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # a broken pipe: it died between requests
            raise self._died("before the request") from None
        try:
            return self._reply(timeout_s, while_doing="answering")
        except WorkerFault:
            raise
        except BaseException:  # e.g. Ctrl-C: its late reply would answer the next request
            self._kill()
            raise

    def close(self) -> None:
        """Let the worker free the model and exit; kill it if it does not."""
        self._finalizer()

    def _reply(self, timeout_s: float, *, while_doing: str) -> dict[str, Any]:
        line = self._read_line(timeout_s, while_doing)
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError:
            self._kill()  # out of step with the protocol: nothing it says can be trusted
            snippet = line[:120].decode(errors="replace")
            raise WorkerFault(
                f"local model process sent a malformed reply {snippet!r} while {while_doing}; "
                f"it was stopped{self._log_tail()}"
            ) from None
        return reply

    def _read_line(self, timeout_s: float, while_doing: str) -> bytes:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise WorkerFault(
                    f"local model process did not answer within {timeout_s:g} s while "
                    f"{while_doing}; it was stopped{self._log_tail()}"
                )
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._died(f"while {while_doing}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _died(self, when: str) -> WorkerFault:
        try:
            returncode = self.proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:  # closed its stdout but lives on: make sure it stops
            self._kill()
            returncode = self.proc.returncode
        self._log_reader.join(timeout=1.0)  # let the last log lines arrive
        self.close()
        return WorkerFault(
            f"local model process {describe_exit(returncode)} {when}{self._log_tail()}"
        )

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        self.close()

    def _log_tail(self) -> str:
        text = " | ".join(line for line in self._log if line)
        if len(text) > LOG_TAIL_CHARS:
            text = "..." + text[-LOG_TAIL_CHARS:]
        return f"; its last log lines: {text}" if text else ""


def _keep_tail(stream: IO[bytes], tail: collections.deque[str]) -> None:
    """Drain the worker's stderr (so it never blocks on a full pipe), keeping the last lines."""
    for raw in stream:
        tail.append(raw.decode(errors="replace").strip())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close stdin (the worker frees the model and exits), then kill what is left."""
    if proc.poll() is None and proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
