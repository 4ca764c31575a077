"""Errors that mean "the user asked for something we cannot do".

Anything raised as `UserError` is shown by the CLI as one paragraph and exit code 2,
never as a traceback. Everything else is a bug or a fault and keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError


class UserError(ValueError):
    """Bad input: the message names the field, the value and what is allowed."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ArchitectureError(UserError):
    """An architecture that is malformed or outside the search space."""


def pydantic_message(err: ValidationError, what: str) -> str:
    """One clause per failing field of a pydantic error: `field=value: rule broken`."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}={e.get('input')!r}: {msg}" if loc else msg)
    return f"invalid {what}: " + "; ".join(parts)


def first_field(err: ValidationError, default: str) -> str:
    """The top-level field of the first error (for `UserError.field`)."""
    loc = err.errors()[0]["loc"]
    return str(loc[0]) if loc else default
