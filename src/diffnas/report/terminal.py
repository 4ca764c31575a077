"""`diffnas status RUN_DIR`: the table of trials, one line per trial in an 80-column terminal.

Rows never wrap: every cell is one line, the architecture is its short form
(`16x(1,2,2) b1 @8+m`), the run's proposer and score name go to the title, and when the
terminal is narrow the reason, then the architecture, are cut with an ellipsis; the full texts
are in `diffnas report`. `*` marks the best score and, in a multi-objective search, `+` the
other members of the Pareto front; `ms` is the measured latency where the search measured it.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from diffnas.console import output_console
from diffnas.execute.accounting import compute_line
from diffnas.experiments.trust import trust_line
from diffnas.gate.entry import ORIGINS
from diffnas.report.source import SearchRecord, TrialRow, load_search
from diffnas.search.screening import screening_lines

STATUS_STYLE = {
    "complete": "green",
    "pruned": "magenta",
    "rejected": "yellow",
    "running": "cyan",
    "pending": "cyan",
    "screened-out": "dim",
}
MIN_REASON = 8  # the columns that give way when the terminal is narrow keep this much
MIN_ARCH = 12


def _cell(text: str, style: str = "") -> Text:
    """One line of plain text (a reason may quote the LLM: "[/x]" is shown, not markup)."""
    return Text(" ".join(text.split()), style=style, no_wrap=True, overflow="ellipsis")


def _row(t: TrialRow, record: SearchRecord, best: float | None, front: set[int]) -> dict[str, Text]:
    score = "-" if t.proxy is None else f"{t.proxy.value:.4g}"
    is_best = t.proxy is not None and t.proxy.value == best
    mark = "*" if is_best else "+" if t.number in front else ""
    by = t.origin or (t.proposer if t.proposer != record.proposer else "")
    return {
        "#": _cell(str(t.number)),
        "rd": _cell(str(t.round + 1) if t.round >= 0 else "w"),  # w: a warm-start trial
        "by": _cell(by),
        "status": _cell(t.status, STATUS_STYLE.get(t.status, "red")),
        "architecture": _cell(t.short_arch if t.arch is not None else str(t.raw)[:40]),
        "GMAC": _cell(f"{t.gmacs:.3g}" if t.gmacs else "-"),
        "Mpar": _cell(f"{t.params_m:.2f}" if t.params_m else "-"),
        "ms": _cell(f"{t.latency_ms:.3g}" if t.latency_ms is not None else "-"),
        "score": _cell(score + mark, "bold" if mark else ""),
        "s": _cell(f"{t.device_s:.0f}" if t.device_s is not None else "-"),
        "reason": _cell(t.reason or ""),
    }


def trials_table(record: SearchRecord, width: int = 80) -> Table:
    """The trials of one search as a rich table at most `width` columns wide, one line a row."""
    best = min((t.proxy.value for t in record.trials if t.proxy is not None), default=None)
    front = {t.number for t in record.front()}
    rows = [_row(t, record, best, front) for t in record.trials]
    names = [
        "#",
        "rd",
        "by",
        "status",
        "architecture",
        "GMAC",
        "Mpar",
        "ms",
        "score",
        "s",
        "reason",
    ]
    if not any(r["by"].plain for r in rows):
        names.remove("by")  # every trial by the run's proposer, which the title names
    if all(t.latency_ms is None for t in record.trials):
        names.remove("ms")  # latency measured: its column (ms per forward pass)
    marks = " (* best)"
    if record.cost_objective is not None:
        marks = f" (* best, + Pareto front of score and {record.cost_objective})"
    table = Table(
        title=Text(
            f"{record.name}: {record.config.space}, {record.proposer}, score {record.proxy_label}"
            + marks,
            no_wrap=True,
            overflow="ellipsis",
        ),
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    widths = {n: max([len(n), *(r[n].cell_len for r in rows)]) for n in names}
    chrome = 2 + 2 * (len(names) - 1)  # the edges and two spaces between columns
    # Too wide: the reason gives way down to MIN_REASON, then the architecture
    excess = chrome + sum(widths.values()) - width
    for name, floor in (("reason", MIN_REASON), ("architecture", MIN_ARCH)):
        cut = min(max(excess, 0), max(widths[name] - floor, 0))
        widths[name] -= cut
        excess -= cut
    right = {"#", "rd", "GMAC", "Mpar", "ms", "score", "s"}
    for n in names:
        table.add_column(
            n,
            justify="right" if n in right else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=widths[n] if n in ("reason", "architecture") else None,
        )
    for r in rows:
        table.add_row(*(r[n] for n in names))
    return table


def winner_trust(record: SearchRecord) -> str | None:
    """How well the search's proxy ranks its space, measured on the space's bundled table
    (`experiments.trust`); None before any candidate is scored or without such a table."""
    if not any(t.proxy is not None for t in record.trials):
        return None
    return trust_line(record.space, record.config.data_spec(), record.config.proxy)


def footer_lines(record: SearchRecord) -> list[str]:
    """Final scores, how far the proxy can be trusted, and the LLM ledger under the table
    (plain text)."""
    lines = []
    for t in record.trials:
        if t.final is not None:
            proxy = f"{t.proxy.value:.4g}" if t.proxy else "-"
            lines.append(
                f"final: trial {t.number} (proxy {proxy}) -> {t.final.label} {t.final.value:.4g}"
            )
    for final in record.summary.get("final", []):
        if final.get("status") != "complete":
            lines.append(f"final: trial {final.get('trial')} -> {final.get('status')}")
    trust = winner_trust(record)
    if trust is not None:
        lines.append(trust)
    origins = record.summary.get("origins") or {}
    if origins:
        order = [o for o in ORIGINS if o in origins] + sorted(set(origins) - set(ORIGINS))
        parts = ", ".join(f"{origins[o]} {o}" for o in order)
        lines.append(f"trained candidates by origin: {parts} ({sum(origins.values())} in all)")
    compute = record.summary.get("compute")
    if compute:
        lines.append(compute_line(compute) + " in all (proxy and final)")
    lines += screening_lines(record.screening)
    ledger = record.ledger
    if ledger is not None:
        lines.append(
            f"LLM: {ledger.num_calls} calls, {ledger.prompt_tokens} + {ledger.completion_tokens}"
            f" tokens, ${ledger.cost_usd:.4f} estimated"
        )
    return lines


def print_status(run_dir: str | Path, console: Console | None = None) -> None:
    """Print the table of trials of a search run folder, and its finals and LLM cost."""
    if console is None:
        console = output_console()
    record = load_search(run_dir)
    console.print(trials_table(record, console.width))
    for line in footer_lines(record):
        console.print(line, markup=False, highlight=False)
