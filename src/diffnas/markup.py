"""Text a user or a model wrote (a rationale, a run folder's name, a proposer label), shown
literally: in Markdown (escaped, one line, tables of it) and in matplotlib (no mathtext).

The report and the experiments' summaries both write it, so it sits below both."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

# Inline Markdown syntax (emphasis, code, links, strike-through, GitHub's $math$) and the
# table's pipe: a backslash makes each a literal character.
_INLINE_SYNTAX = re.compile(r"([\\`*_\[\]$~|])")


def md_text(text: object) -> str:
    """Any text a user or a model wrote, shown literally in Markdown: one line, no HTML, every
    inline Markdown character escaped (a rationale's `[link](...)` or `$x$` stays text)."""
    one_line = " ".join(html.escape(str(text), quote=False).split())
    return _INLINE_SYNTAX.sub(r"\\\1", one_line)


def md_cell(text: object) -> str:
    """A table cell: `md_text`, so pipes and Markdown syntax are escaped too."""
    return md_text(text)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]


def plot_text(value: object) -> str:
    """Any text a user or a model wrote (a run folder's name, a proposer label, a proxy
    study's labels), as matplotlib shows it literally: an unescaped `$` pair is parsed as
    mathtext, and `$\\frac$` or an unbalanced `$x^$` raised inside `savefig`, ending the whole
    report. `\\$` is matplotlib's literal dollar."""
    return str(value).replace("$", r"\$")
