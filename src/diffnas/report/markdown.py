"""Markdown tables, for the report and the experiments' summaries alike."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence


def md_cell(text: object) -> str:
    """A table cell: one line, pipes escaped, no HTML."""
    return " ".join(html.escape(str(text), quote=False).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
