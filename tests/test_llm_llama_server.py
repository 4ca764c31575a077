"""Against a real OpenAI-compatible server: llama-cpp-python's own `llama_cpp.server`.

It serves the bundled SmolLM2 GGUF on 127.0.0.1 and answers OpenAI's `json_schema` response
format with HTTP 500 ("response_format.type: input should be 'text' or 'json_object'"), but
takes a schema as `{"type": "json_object", "schema": ...}` and turns it into a grammar. The
default `--structured auto` must find that out at the first request (one notice, no retries
spent) and then get schema-valid answers, so a search with default options trains candidates
the model proposed. The loopback doubles in `doubles.py` cannot show this: they answer what
a test scripts, not what a server does.

The server's extras (fastapi, uvicorn, sse-starlette, starlette-context, pydantic-settings)
are in the `test` extra; without them the module is skipped, except under CI (`CI=true`),
where that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from diffnas.cli.main import run
from diffnas.propose.llm.base import ChatMessage, LLMRequest
from diffnas.propose.llm.local_backend import find_bundled_gguf
from diffnas.propose.llm.openai_backend import OpenAIBackend
from diffnas.propose.llm.retry import RetryPolicy

SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")
MISSING = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
if MISSING and os.environ.get("CI") != "true":
    pytest.skip(f"llama_cpp.server needs {', '.join(MISSING)}", allow_module_level=True)

SCHEMA = {
    "type": "object",
    "properties": {
        "base": {"type": "integer", "enum": [3, 5, 7]},
        "field": {"type": "string", "enum": ["channels", "depth"]},
    },
    "required": ["base", "field"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> str:
    """`python -m llama_cpp.server` with the bundled SmolLM2 on a free loopback port."""
    assert not MISSING, f"the test extra is not installed: {MISSING}"
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(find_bundled_gguf()),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", "1",
             "--seed", "0"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"llama_cpp.server did not start:\n{log.read_text()}"
                    ) from None
                time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_auto_finds_the_schema_form_the_server_takes_and_answers_validate(llama_server) -> None:
    notices: list[str] = []
    backend = OpenAIBackend(
        "smollm2",
        base_url=llama_server,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.0),
        notify=notices.append,
    )
    request = LLMRequest(
        messages=[ChatMessage(role="user", content="Choose a base and a field.")],
        schema=SCHEMA,
        max_tokens=48,
        temperature=1.0,
    )
    first = backend.complete(request)
    # the server refused OpenAI's form once, with HTTP 500, and was not retried as a fault
    assert first.attempts == 1
    assert len(first.errors) == 1 and "HTTP 500" in first.errors[0]
    assert "response_format" in first.errors[0]
    assert backend.structured == "schema_object"
    assert len(notices) == 1 and "using schema_object" in notices[0]
    answers = [first] + [backend.complete(request) for _ in range(3)]
    for answer in answers:  # the grammar made from the schema holds every answer to it
        jsonschema.validate(json.loads(answer.text), SCHEMA)
    assert len(notices) == 1  # found once for the backend's life


def test_an_explicit_mode_the_server_refuses_fails_naming_auto(llama_server) -> None:
    from diffnas.propose.llm.base import LLMUnavailable

    backend = OpenAIBackend(
        "smollm2",
        base_url=llama_server,
        structured="json_schema",
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.0),
    )
    request = LLMRequest(messages=[ChatMessage(role="user", content="hi")], schema=SCHEMA)
    with pytest.raises(LLMUnavailable, match="--structured auto") as err:
        backend.complete(request)
    assert err.value.attempts == 1  # a refusal of the request's form is not retried


def search(server: str, tmp_path: Path, monkeypatch, capsys, *extra: str) -> dict:
    """`diffnas search` of one round on the tiny space through the server; its summary."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = [
        "search", "--llm", "openai:smollm2", "--base-url", server, "--rounds", "1",
        "--data-subset", "64", "--proxy-steps", "2", "--proxy-batch-size", "4",
        "--score-samples", "4", "--score-steps", "2", "--promote", "0", "--device", "cpu", *extra,
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["diffnas", *args])
    with pytest.raises(SystemExit) as exit_:
        run()
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, out + err
    assert "using schema_object" in err  # the one-line notice, once
    assert err.count("refused structured output") == 1
    return json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())


def test_a_search_in_edit_mode_trains_the_edits_the_model_chose(
    llama_server, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Edit mode through the server, as in-process: the schema lists only acceptable edits and
    the server's grammar holds the model to it, so its answers are trained, not replaced by
    random fallbacks (with `json_object` every slot fell back to random)."""
    summary = search(
        llama_server, tmp_path, monkeypatch, capsys, "--per-round", "2", "--llm-mode", "edit"
    )
    assert summary["rounds_failed"] == 0
    assert summary["origins"]["llm-edit"] >= 1, summary
    assert summary["status_counts"].get("complete", 0) >= 1, summary


def test_default_options_get_every_answer_through_in_the_schema(
    llama_server, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Default options (`--llm-mode full` for an openai backend): every request is answered
    with JSON in the proposal's schema; what the gate then refuses is the 135 M model's
    architecture (a head width that does not divide a level), not the answer's form."""
    summary = search(
        llama_server, tmp_path, monkeypatch, capsys, "--per-round", "1", "--max-repairs", "0"
    )
    assert summary["rounds_failed"] == 0 and summary["trials"] == 1
    run_dir = next((tmp_path / "runs").glob("*-search-*"))
    calls = [
        json.loads(line) for line in (run_dir / "llm" / "calls.jsonl").read_text().splitlines()
    ]
    assert calls and all(c["ok"] for c in calls)
    entries = json.loads((run_dir / "rounds" / "round-000.json").read_text())["entries"]
    assert entries and all(e["origin"] == "llm" for e in entries)
    for entry in entries:  # parsed: a reason, if any, is about the net, not the answer's form
        reason = entry["reason"] or ""
        assert entry["raw"] is not None and "JSON" not in reason and "schema" not in reason
