"""`redact`: key values and credential shapes leave every error text; ordinary text stays."""

from __future__ import annotations

import json

import pytest

from diffnas.propose.llm import LLMUnavailable
from diffnas.propose.llm.redact import REDACTED, env_secrets, redact, redact_values

KEY = "plainvalue-0123456789abcdef"  # a key with no telltale prefix


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-ghi_123", f"Authorization: {REDACTED}"),
        ("{'authorization': 'Bearer abcdefgh12'}", f"{{'authorization': '{REDACTED}'}}"),
        ('{"x-api-key": "anything-long"}', f'{{"x-api-key": "{REDACTED}"}}'),
        ('{\\"x-api-key\\": \\"anything-long\\"}', f'{{\\"x-api-key\\": \\"{REDACTED}\\"}}'),
        ("api_key=abcdefgh12&model=x", f"api_key={REDACTED}&model=x"),
        ("token sent: bearer abcdefgh12", f"token sent: bearer {REDACTED}"),
        (
            "Incorrect API key provided: sk-proj-ABCD1234efgh.",
            f"Incorrect API key provided: {REDACTED}.",
        ),
        ("key sk-ant-api03-xyzXYZ0123_-9", f"key {REDACTED}"),
    ],
)
def test_credential_shapes_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "HTTP 500: Error code: 500 - {'error': {'message': 'loopback fault 500'}}",
        "api_key_env=MY_KEY is not set",  # the variable's name is not a secret
        "bearer of bad news",  # too short to be a token
        "channel_mult [1, 3, 2] is outside the space",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_known_values_go_whole_wherever_they_are(monkeypatch) -> None:
    monkeypatch.setenv("MY_ENDPOINT_KEY", KEY)
    assert redact(f"the key {KEY} was refused", [KEY]) == f"the key {REDACTED} was refused"
    assert KEY in env_secrets(["MY_ENDPOINT_KEY"]) and KEY not in env_secrets()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert redact(f"x{KEY}x") == f"x{REDACTED}x"  # the default variables are always known
    # a secret that contains another goes whole; short values would scrub words
    assert redact_values(f"{KEY}-suffix", [KEY, f"{KEY}-suffix"]) == REDACTED
    assert redact_values("the cat sat", ["cat"]) == "the cat sat"


def test_redacted_json_stays_json() -> None:
    text = json.dumps(
        {"errors": ["x-api-key: abcdefgh12", 'header "authorization": "Bearer qwertyuiop"']}
    )
    assert "abcdefgh12" not in redact(text) and "qwertyuiop" not in redact(text)
    assert json.loads(redact(text))["errors"][0] == f"x-api-key: {REDACTED}"


def test_llm_unavailable_is_redacted_whoever_raises_it(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    err = LLMUnavailable("local", f"child said {KEY} and Bearer abcdefgh1234", 1)
    assert KEY not in str(err) and "abcdefgh1234" not in str(err)
    assert KEY not in err.last_error and KEY not in "".join(err.errors)
