"""Proposers: ask a language model (or a baseline) for new candidate architectures."""

from __future__ import annotations

#: Repair turns an LLM proposer gets per round after its first answer (the one default of the
#: search config, the CLI, the registry and `LLMProposer`). Here, not in `base`, so the CLI
#: declares its option without importing the proposers (and torch under them).
DEFAULT_MAX_REPAIRS = 2
