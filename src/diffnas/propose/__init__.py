"""Proposers: ask a language model (or a baseline) for new candidate architectures."""
