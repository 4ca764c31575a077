"""Our own retry loop: exponential backoff with jitter, `retry-after` honoured, every try counted.

The SDKs' built-in retries are switched off (`max_retries=0`) so that attempts show up in the
records and tests can inject `sleep` instead of waiting. Retried: timeouts, connection errors,
HTTP 408/429 and 5xx. Not retried: other 4xx (a bad request stays bad).

Every fault's text is redacted (`redact.redact`) the moment it is made, before it is shortened:
an error body may echo the key, and these texts reach the terminal and the run folder.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from diffnas.propose.llm.base import LLMUnavailable
from diffnas.propose.llm.redact import redact

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class RetryPolicy(BaseModel):
    """How hard to try before declaring the endpoint unavailable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, description="Tries in total, the first included.")
    base_delay_s: float = Field(default=1.0, ge=0.0, description="Backoff before the 2nd try.")
    max_delay_s: float = Field(default=30.0, ge=0.0, description="Cap on one computed backoff.")
    jitter: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Backoff is scaled by 1 + jitter * U(0, 1)."
    )
    max_retry_after_s: float = Field(
        default=300.0, ge=0.0, description="Cap on a server's `retry-after` (guards odd values)."
    )

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry `retry_number` (1 = first retry)."""
        base = min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))
        return base * (1.0 + self.jitter * rng.random())


@dataclass(frozen=True)
class Fault:
    """What went wrong in one attempt, as the retry loop needs to know it."""

    retryable: bool
    description: str
    retry_after_s: float | None = None


@dataclass
class RetryOutcome:
    """The value of the successful attempt and the faults seen before it."""

    value: Any
    attempts: int
    errors: list[str] = field(default_factory=list)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (number or HTTP date), else None."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_sdk_error(
    exc: BaseException,
    connection_errors: tuple[type[BaseException], ...],
    secrets: Iterable[str | None] = (),
) -> Fault | None:
    """Classify an exception from the openai/anthropic SDKs (they share their error shape).

    `secrets` (the client's key) are redacted from the description, with every credential shape.
    """
    secrets = tuple(secrets)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and response is not None:
        message = f"HTTP {status}: {short_error(exc, secrets)}"
        retry_after = parse_retry_after(getattr(response, "headers", None))
        return Fault(status in RETRYABLE_STATUS, message, retry_after)
    if isinstance(exc, connection_errors):
        return Fault(True, f"{type(exc).__name__}: {short_error(exc, secrets)}")
    if isinstance(exc, json.JSONDecodeError):  # a garbled body from a proxy or a crashing server
        return Fault(True, f"bad response body: {type(exc).__name__}: {short_error(exc, secrets)}")
    return None


def call_with_retries(
    attempt: Callable[[], T],
    classify: Callable[[BaseException], Fault | None],
    *,
    endpoint: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    secrets: Iterable[str | None] = (),
) -> RetryOutcome:
    """Run `attempt` until it succeeds, a fault is not retryable, or attempts run out.

    Exceptions that `classify` maps to None are not faults of the endpoint and propagate as is.

    Raises `LLMUnavailable` naming the endpoint and the last error; its `errors` lists every
    fault seen, for the call record. Every description is redacted of `secrets` and of anything
    shaped like a credential, whichever `classify` made it.
    """
    rng = rng or random.Random()
    secrets = tuple(secrets)
    errors: list[str] = []
    for number in range(1, policy.max_attempts + 1):
        try:
            return RetryOutcome(attempt(), number, errors)
        except Exception as exc:
            fault = classify(exc)
            if fault is None:
                raise
            description = redact(fault.description, secrets)
            errors.append(description)
            if not fault.retryable or number == policy.max_attempts:
                # `from None`: the SDK's exception may quote the key, and a traceback prints it.
                raise LLMUnavailable(endpoint, description, number, errors) from None
            if fault.retry_after_s is not None:
                delay = min(fault.retry_after_s, policy.max_retry_after_s)
            else:
                delay = policy.backoff(number, rng)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def short_error(exc: BaseException, secrets: Iterable[str | None] = (), limit: int = 300) -> str:
    """The exception's text on one line, redacted, then cut to `limit` characters."""
    text = redact(" ".join(str(exc).split()), secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."
