"""Errors that mean "the user asked for something we cannot do".

Anything raised as `UserError` is shown by the CLI as one paragraph and exit code 2,
never as a traceback. Everything else is a bug or a fault and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field, the value and what is allowed."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ArchitectureError(UserError):
    """An architecture that is malformed or outside the search space."""
