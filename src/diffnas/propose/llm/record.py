"""Every call on disk (`RUN_DIR/llm/calls.jsonl`), replay from it, and resume without paying twice.

One JSON line per call: when, which endpoint, the request key and messages, the schema's hash,
the answer (text, tokens, latency, cost, attempts) or the failure, and the faults retried.
API keys are never part of a request or an endpoint; any key value found in the environment
is scrubbed from the line before it is written, and error texts lose every credential shape
(`redact.redact`), as a second guard.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffnas.errors import UserError
from diffnas.propose.llm.base import (
    LLMBackend,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
)
from diffnas.propose.llm.ledger import CostLedger
from diffnas.propose.llm.redact import env_secrets, redact, redact_values
from diffnas.runs import append_jsonl, read_records

CALLS_FILE = Path("llm") / "calls.jsonl"
CALLS_FIX = "restore it, or move it away to ask the LLM again (paying again) on --resume"


class CallRecord(BaseModel):
    """One line of `llm/calls.jsonl` as it is read back (resume, replay, the report's ledger)."""

    model_config = ConfigDict(extra="allow")

    time: float | None = None
    endpoint: str = ""
    key: str | None = None  # the request's key; replay and resume serve answers by it
    ok: bool
    response: LLMResponse | None = None  # the answer when `ok`
    attempts: int | None = Field(None, ge=1)
    errors: list[str] = Field(default_factory=list)
    error: str | None = None  # why the call failed when not `ok`

    @model_validator(mode="after")
    def _answered(self) -> CallRecord:
        if self.ok and self.response is None:
            raise ValueError("a call recorded as ok has no response")
        return self


def read_calls(path: Path) -> list[CallRecord]:
    """Every recorded call of a run folder's `llm/calls.jsonl` (none when there is no file)."""
    return read_records(path, CallRecord, "LLM call record", fix=CALLS_FIX)


class ReplayMiss(UserError):
    """A replayed search asked something the recorded run never asked (it has diverged)."""


def calls_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CALLS_FILE


def _load_recorded(path: Path) -> dict[str, deque[CallRecord]]:
    by_key: dict[str, deque[CallRecord]] = defaultdict(deque)
    for record in read_calls(path):
        if record.key is not None:
            by_key[record.key].append(record)
    return by_key


class RecordingBackend(LLMBackend):
    """Wraps a backend: enforces the budget, records each call, and on resume serves old answers.

    With `run_dir=None` it only keeps the ledger. When `run_dir` already holds calls (a resumed
    search), answers recorded for a request key are served first, in recorded order, without
    calling the inner backend; their cost was already counted, and is loaded into the ledger.
    """

    def __init__(
        self,
        inner: LLMBackend,
        run_dir: str | Path | None = None,
        *,
        ledger: CostLedger | None = None,
        resume: bool = True,
        secret_env_vars: Iterable[str] = (),
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.endpoint = inner.endpoint
        self.ledger = ledger or CostLedger()
        self.path = calls_path(run_dir) if run_dir is not None else None
        self._secret_env_vars = tuple(secret_env_vars)
        self._lock = threading.Lock()
        self._recorded: dict[str, deque[CallRecord]] = defaultdict(deque)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume:
                for key, records in _load_recorded(self.path).items():
                    answered = deque(r for r in records if r.ok)
                    self._recorded[key] = answered
                    for record in answered:
                        assert record.response is not None  # checked as it was read
                        self.ledger.add(record.response)

    def complete(self, request: LLMRequest) -> LLMResponse:
        key = request.key()
        with self._lock:
            if self._recorded.get(key):
                record = self._recorded[key].popleft()
                assert record.response is not None  # only answered calls are kept
                return record.response.model_copy(update={"replayed": True})
        self.ledger.check()
        try:
            response = self.inner.complete(request)
        except LLMUnavailable as exc:
            self._append(request, None, exc)
            raise
        self.ledger.add(response)
        self._append(request, response, None)
        return response

    def _append(
        self, request: LLMRequest, response: LLMResponse | None, error: LLMUnavailable | None
    ) -> None:
        if self.path is None:
            return
        record: dict[str, Any] = {
            "time": time.time(),
            "endpoint": self.endpoint,
            "key": request.key(),
            "messages": request.message_dicts(),
            "schema_hash": request.schema_hash(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "ok": response is not None,
            "response": response.model_dump(mode="json") if response is not None else None,
            "attempts": response.attempts if response is not None else error.attempts,
            "errors": response.errors if response is not None else error.errors,
            "error": str(error) if error is not None else None,
        }
        secrets = env_secrets(self._secret_env_vars)
        # Error texts lose every credential shape (the backends already did; a second guard).
        record["errors"] = [redact(e, secrets) for e in record["errors"]]
        if record["error"] is not None:
            record["error"] = redact(record["error"], secrets)
        # Messages and answers lose only the key values: replay needs them byte for byte.
        text = redact_values(json.dumps(record), secrets)
        with self._lock:
            append_jsonl(self.path, json.loads(text))


class ReplayBackend(LLMBackend):
    """Answers from a recorded run folder, offline and keyless, in the recorded order per key.

    A recorded failure is replayed as the same `LLMUnavailable`, so a replayed search fails the
    same rounds; a request never recorded raises `ReplayMiss`.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = calls_path(run_dir)
        if not self.path.is_file():
            raise UserError(
                f"cannot replay {str(run_dir)!r}: it has no recorded LLM calls ({CALLS_FILE})",
                field="replay_dir",
            )
        self._recorded = _load_recorded(self.path)
        self._lock = threading.Lock()
        self.model = "replay"
        self.endpoint = f"replay:{run_dir}"

    def complete(self, request: LLMRequest) -> LLMResponse:
        key = request.key()
        with self._lock:
            queue = self._recorded.get(key)
            record = queue.popleft() if queue else None
        if record is None:
            raise ReplayMiss(
                f"replay of {self.path} has no (more) recorded answers for request {key[:16]} "
                f"(last message: {request.messages[-1].content[:80]!r}); the replayed search "
                f"asked something the recorded run did not — was the config changed?",
                field="replay_dir",
            )
        if not record.ok or record.response is None:
            raise LLMUnavailable(self.endpoint, f"(replayed) {record.error}", record.attempts or 1)
        return record.response.model_copy(update={"replayed": True})
