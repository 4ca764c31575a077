"""retry-after parsing, backoff growth and what the retry loop lets through."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from diffnas.propose.llm import LLMUnavailable, RetryPolicy
from diffnas.propose.llm.retry import Fault, call_with_retries, parse_retry_after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers, expected) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= parse_retry_after({"retry-after": later}) <= 61


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_after_is_capped_by_policy() -> None:
    sleeps: list[float] = []
    answers = iter([RuntimeError("busy"), "ok"])

    def attempt() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    outcome = call_with_retries(
        attempt,
        lambda exc: Fault(True, "429", retry_after_s=1e9),
        endpoint="e",
        policy=RetryPolicy(max_retry_after_s=60),
        sleep=sleeps.append,
    )
    assert (outcome.value, outcome.attempts, outcome.errors, sleeps) == ("ok", 2, ["429"], [60])


def test_unclassified_exceptions_propagate_unchanged() -> None:
    def attempt() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call_with_retries(
            attempt, lambda exc: None, endpoint="e", policy=RetryPolicy(), sleep=print
        )


def test_not_retryable_fault_stops_at_once() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise RuntimeError("400")

    with pytest.raises(LLMUnavailable, match="endpoint e is unavailable after 1 attempt"):
        call_with_retries(
            attempt,
            lambda exc: Fault(False, "HTTP 400"),
            endpoint="e",
            policy=RetryPolicy(),
            sleep=print,
        )
    assert len(calls) == 1
