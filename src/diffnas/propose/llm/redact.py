"""One redaction of credentials for every error text diffnas prints or stores.

An endpoint's error body may echo what it was sent - a 401 that quotes the `Authorization`
header is common - and that text travels into `LLMUnavailable`, the terminal, `events.jsonl`
and `llm/calls.jsonl`. `redact` removes the key values we know (given, or found in the
environment) and anything shaped like a credential: `Bearer ...`, an `Authorization` /
`x-api-key` / `api_key` field with its value, and `sk-...` keys. Redact *before* truncating a
text: a cut key no longer matches its full value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
#: Environment variables that hold keys by default (a custom `--api-key-env` is added per call).
KEY_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
#: Shorter values would scrub ordinary words; real keys are long.
MIN_SECRET_CHARS = 8

# A quote, optionally JSON-escaped (records are redacted as dumped JSON text too).
_Q = r"""(?:\\?['"])?"""
_VALUE = r"""[^\s'"\\,;&}\]]+"""
_CREDENTIAL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a header or field and its value: `authorization: Bearer abc`, `"x-api-key": "abc"`, api_key=abc
    (
        re.compile(
            rf"(?i)\b((?:proxy-)?authorization|(?:x-)?api[-_]?key)({_Q}\s*[:=]\s*{_Q})"
            rf"(?:(?:bearer|basic|token)\s+)?{_VALUE}"
        ),
        rf"\1\2{REDACTED}",
    ),
    # a bearer token anywhere else
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {REDACTED}"),
    # OpenAI / Anthropic key shapes: sk-..., sk-proj-..., sk-ant-...
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
)


def env_secrets(extra_env_vars: Iterable[str | None] = ()) -> list[str]:
    """The key values held by the default key variables and by `extra_env_vars`."""
    names = {*KEY_ENV_VARS, *(name for name in extra_env_vars if name)}
    values = (os.environ.get(name, "").strip() for name in sorted(names))
    return [value for value in values if len(value) >= MIN_SECRET_CHARS]


def redact_values(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with each known secret value replaced (values shorter than 8 characters kept)."""
    # Longest first: a secret that contains another must go whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]:
        text = text.replace(secret, REDACTED)
    return text


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without `secrets`, the keys in the environment, or anything shaped like a credential."""
    text = redact_values(text, [*secrets, *env_secrets()])
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
