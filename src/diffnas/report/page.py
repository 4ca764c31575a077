"""`diffnas report`: one self-contained HTML page and a Markdown summary of one or more searches.

The page carries every image as a base64 data URI and no script, so it opens from a mail
attachment or an archive with nothing beside it. The Markdown summary links the same plots,
written as PNG files under `plots/` next to it. Every text a model or a user wrote (rationales,
reasons, raw proposals) is escaped: it is shown, never interpreted.
"""

from __future__ import annotations

import base64
import html
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from diffnas import __version__
from diffnas.execute.accounting import compute_hours, compute_line
from diffnas.markup import markdown_table, md_text
from diffnas.report import plots
from diffnas.report.proxy_study import ProxyStudy, load_proxy_study
from diffnas.report.source import (
    Ledger,
    ScoreRow,
    SearchRecord,
    TrialRow,
    load_search,
)
from diffnas.report.terminal import winner_trust
from diffnas.runs import check_out_dir
from diffnas.search.screening import screening_lines
from diffnas.train.latency import LatencySettings

HTML_FILE, MARKDOWN_FILE, PLOTS_DIR = "report.html", "report.md", "plots"
WINNER_GRID = "winner-samples"  # plots/winner-samples-N.png: the answer's sample grid


@dataclass
class Figure:
    name: str  # file stem under plots/
    title: str
    png: bytes
    caption: str = ""


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    plots: list[Path]
    trials: int
    trust: list[str]  # how far each search's proxy can be trusted (`winner_trust`), once each


def default_out(run_dirs: Sequence[Path]) -> Path:
    """One run: RUN_DIR/report; several: ./report (they are compared side by side)."""
    return Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report")


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    proxy_check: str | Path | None = None,
) -> ReportFiles:
    """Read the searches in `run_dirs` and write report.html, report.md and plots/ to `out_dir`."""
    run_dirs = [Path(d) for d in run_dirs]
    records = [load_search(d) for d in run_dirs]
    check = load_proxy_study(proxy_check) if proxy_check is not None else None
    out = Path(out_dir) if out_dir is not None else default_out(run_dirs)
    check_out_dir(out)  # before the plots: a file there, a place nothing can be written
    figures = make_figures(records, check)
    (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    plot_paths = []
    for figure in figures:
        path = out / PLOTS_DIR / f"{figure.name}.png"
        path.write_bytes(figure.png)
        plot_paths.append(path)
    for i, record in enumerate(records):
        winner = answer(record)
        if winner.grid is not None:  # the Markdown links it; the HTML page embeds it
            path = out / PLOTS_DIR / f"{WINNER_GRID}-{i}.png"
            path.write_bytes(winner.grid.read_bytes())
            plot_paths.append(path)
    html_path, md_path = out / HTML_FILE, out / MARKDOWN_FILE
    html_path.write_text(render_html(records, figures), encoding="utf-8")
    md_path.write_text(render_markdown(records, figures), encoding="utf-8")
    trust = [line for line in dict.fromkeys(map(winner_trust, records)) if line]
    return ReportFiles(html_path, md_path, plot_paths, sum(len(r.trials) for r in records), trust)


def make_figures(records: Sequence[SearchRecord], check: ProxyStudy | None) -> list[Figure]:
    """The report's plots, in page order (the first two sit side by side on a wide screen)."""
    figures = []
    evaluated = any(t.proxy is not None for r in records for t in r.trials)
    if evaluated:
        figures.append(
            Figure(
                "score-vs-macs",
                "Proxy score against compute",
                plots.score_vs_macs(records),
                "Each evaluated candidate (trial number beside it); the black steps are the "
                "Pareto front, the green band the space's compute budget.",
            )
        )
    agreement = plots.proxy_vs_final(records)
    if agreement is not None:
        figures.append(
            Figure(
                "proxy-vs-final",
                "Proxy against final score",
                agreement.png,
                _tau_sentence(agreement, "promoted candidates"),
            )
        )
    if any(t.latency_ms is not None for r in records for t in _evaluated_rows(r)):
        figures.append(
            Figure(
                "score-vs-latency",
                "Proxy score against measured latency",
                plots.score_vs_latency(records),
                "Each evaluated candidate against the latency of one forward pass measured at "
                "the gate (how: the run's facts below); the black steps are the Pareto front, "
                "the dashed line the latency budget.",
            )
        )
    objective = next((r.cost_objective for r in records if r.cost_objective), None)
    curves = plots.hypervolume_curves(records, objective) if objective and evaluated else None
    if curves is not None:
        figures.append(
            Figure(
                "hypervolume",
                "Hypervolume per round",
                curves,
                f"The area of the (score, {objective}) plane each run's candidates dominate "
                "after each round, up to one reference point shared by the runs (higher is "
                "better), one line per run folder and proposer.",
            )
        )
    if evaluated:
        figures.append(
            Figure(
                "best-so-far",
                "Best so far, per round and per device-second",
                plots.best_so_far_curves(records),
                "The best proxy score found after each round and after each candidate's "
                "evaluation time, one line per run folder.",
            )
        )
    if check is not None:
        study = plots.rank_agreement(
            check.pairs, check.proxy_label, check.reference_label, "Proxy-check study"
        )
        caption = _tau_sentence(study, f"architectures of {check.source}")
        figures.append(
            Figure(
                "proxy-check",
                "Proxy-check study",
                study.png,
                f"{caption} {check.note}" if check.note else caption,
            )
        )
    return figures


def _evaluated_rows(record: SearchRecord) -> list:
    return [t for t in record.trials if t.proxy is not None]


def _tau_sentence(agreement: plots.RankAgreement, what: str) -> str:
    if agreement.tau is None:
        return f"Kendall's τ needs two {what} with distinct scores; there are {agreement.n}."
    return f"Kendall's τ = {agreement.tau:.2f} over {agreement.n} {what} (1: the same order)."


# ----- the answer at the top -----
@dataclass
class Answer:
    """What a search found, in the words at the top of its report."""

    sentences: list[str]
    grid: Path | None  # the winner's samples: from its final training when it had one
    grid_caption: str


def _total_compute(record: SearchRecord) -> str:
    """The search's compute in device-hours: summary.json's, else summed from the trials."""
    hours = record.summary.get("compute")
    if not isinstance(hours, dict):
        device = "cuda" if str(record.config.proxy.device).startswith("cuda") else "cpu"
        hours = compute_hours(
            [(device, t.device_s) for t in record.trials]
            + [(device, t.final_device_s) for t in record.trials]
        )
    return compute_line(hours).removeprefix("compute: ")


def answer(record: SearchRecord) -> Answer:
    """Which architecture won, its final score, and what the search cost."""
    finals = [t for t in record.trials if t.final is not None]
    scored = [t for t in record.trials if t.proxy is not None]
    evaluated = f"{len(scored)} of {len(record.trials)} candidates evaluated"
    compute = f"total compute: {_total_compute(record)}"
    if finals:
        best: TrialRow = min(finals, key=lambda t: t.final.value)  # type: ignore[union-attr]
        lead = (
            f"Trial {best.number} won: {best.short_arch} ({_num(best.params_m, 3)} M params, "
            f"{_num(best.gmacs, 3)} GMACs), final {_score_text(best.final)} after the "
            f"{record.config.final.recipe} recipe (proxy {_score_text(best.proxy)})."
        )
    elif scored:
        best = min(scored, key=lambda t: t.proxy.value)  # type: ignore[union-attr]
        lead = (
            f"Best so far: trial {best.number}, {best.short_arch} ({_num(best.params_m, 3)} M "
            f"params, {_num(best.gmacs, 3)} GMACs), proxy {_score_text(best.proxy)}; no "
            "candidate has a final score yet (promoted ones are trained in full at the end)."
        )
    else:
        return Answer(
            [f"No candidate was evaluated: {evaluated}; {compute}."], None, "no samples yet"
        )
    grid, stage = (best.final_samples, "final") if best.final_samples else (best.samples, "proxy")
    caption = f"trial {best.number}: samples after its {stage} training"
    trust = winner_trust(record)
    return Answer([lead, *([trust] if trust else []), f"{evaluated}; {compute}."], grid, caption)


# ----- shared formatting -----
def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _score_text(score: ScoreRow | None) -> str:
    return "-" if score is None else f"{score.value:.4g} {score.label}"


def _ledger_cells(ledger: Ledger) -> list[tuple[str, str]]:
    lat = ledger.latencies
    rows = [
        ("calls", f"{ledger.num_calls}" + (f" ({ledger.failed} failed)" if ledger.failed else "")),
        ("prompt tokens", f"{ledger.prompt_tokens:,}"),
        ("completion tokens", f"{ledger.completion_tokens:,}"),
        ("estimated cost", f"${ledger.cost_usd:.4f}"),
    ]
    if lat:
        rows.append(
            (
                "latency",
                f"mean {statistics.fmean(lat):.2f} s, median {statistics.median(lat):.2f} s, "
                f"max {max(lat):.2f} s, total {sum(lat):.1f} s",
            )
        )
    return rows


def _run_facts(record: SearchRecord) -> list[tuple[str, str]]:
    c, s = record.config, record.summary
    proxy, final = c.proxy.score, c.final.score
    facts = [
        ("space", c.space + (f" (budget {record.space.budget.min_gmacs:g}–"
                             f"{record.space.budget.max_gmacs:g} GMACs)" if record.space and
                             c.latency_budget_ms is None else "")),
        ("data", c.data + (f", subset {c.data_subset}" if c.data_subset else "")),
        ("proposer", c.proposer + (f" via {c.llm}" if record.ledger is not None else "")),
        ("rounds", f"{c.rounds} x {c.per_round} candidates"),
        ("proxy", f"{c.proxy.recipe} recipe; {proxy.label} N={proxy.num_samples}, "
                  f"{proxy.sampler} S={proxy.steps}"),
        ("final", f"top {c.promote} with the {c.final.recipe} recipe; {final.label} "
                  f"N={final.num_samples}, {final.sampler} S={final.steps}"),
    ]  # fmt: skip
    if s:
        facts.append(("stopped", str(s.get("stop_reason", "-"))))
        counts = s.get("status_counts") or {}
        facts.append(("trials", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "0"))
    else:
        facts.append(("stopped", "not yet (no summary.json: running or interrupted)"))
    facts += _objective_facts(record)
    best = min((t for t in record.trials if t.proxy), key=lambda t: t.proxy.value, default=None)  # type: ignore[union-attr]
    if best is not None:
        facts.append(("best", f"trial {best.number}: {_score_text(best.proxy)}, {best.short_arch}"))
    for t in record.trials:
        if t.final is not None:
            facts.append((f"final trial {t.number}", _score_text(t.final)))
    if c.screen is not None:
        lines = screening_lines(record.screening) or ["nothing screened yet"]
        facts.append((f"screening ({c.screen} per round, {c.screener})", " | ".join(lines)))
    if c.warm_start:
        imported = sum(1 for t in record.trials if t.round < 0)
        facts.append(("warm start", f"{imported} measured trial(s) from {', '.join(c.warm_start)}"))
    return facts


def _objective_facts(record: SearchRecord) -> list[tuple[str, str]]:
    """The objectives and front of a multi-objective search; how latency was measured."""
    c, facts = record.config, []
    if record.cost_objective is not None:
        front = ", ".join(str(t.number) for t in record.front()) or "none yet"
        facts.append(("objectives", f"{', '.join(c.objectives)}; Pareto front: trials {front}"))
    latency = record.summary.get("latency")
    try:
        settings = LatencySettings.model_validate((latency or {}).get("settings"))
    except ValidationError:
        settings = None  # no latency measured (or a summary from elsewhere): nothing to say
    if settings is not None:
        facts.append(
            (
                "latency",
                f"median of {settings.runs} passes after {settings.warmup} warm-up; "
                f"{settings.conditions()} on {latency.get('device_name', '?')}",  # type: ignore[union-attr]
            )
        )
    if c.latency_budget_ms is not None:
        facts.append(("latency budget", f"{c.latency_budget_ms:g} ms per forward pass"))
    return facts


TRIAL_COLUMNS = (
    "trial", "round", "proposer", "architecture", "params (M)", "GMACs",
    "proxy score", "final score", "status", "reason", "device-s",
)  # fmt: skip


def _shared_label(scores: Sequence[ScoreRow | None]) -> str | None:
    """The one protocol label of these scores, or None when they differ (or there are none)."""
    labels = {s.label for s in scores if s is not None}
    return labels.pop() if len(labels) == 1 else None


def trial_table(record: SearchRecord) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the table of trials. A score label shared by the whole column
    goes to its header ("proxy RFID[classifier]"), else next to each value."""
    proxy_label = _shared_label([t.proxy for t in record.trials])
    final_label = _shared_label([t.final for t in record.trials])
    header = list(TRIAL_COLUMNS)
    header[6] += f" {proxy_label}" if proxy_label else ""
    header[7] += f" {final_label}" if final_label else ""

    def score(value: ScoreRow | None, shared: str | None) -> str:
        return _num(value.value) if value is not None and shared else _score_text(value)

    rows = [
        [
            str(t.number),
            str(t.round + 1),
            t.by,
            t.short_arch,
            _num(t.params_m, 3),
            _num(t.gmacs, 3),
            score(t.proxy, proxy_label),
            score(t.final, final_label),
            t.status,
            t.reason,
            _num(t.device_s, 3),
        ]  # fmt: skip
        for t in record.trials
    ]
    if any(t.latency_ms is not None for t in record.trials):  # extra columns go last
        header.append("latency ms")
        for t, row in zip(record.trials, rows):
            row.append(_num(t.latency_ms, 3))
    if record.cost_objective is not None:
        front = {t.number for t in record.front()}
        header.append("Pareto")
        for t, row in zip(record.trials, rows):
            row.append("front" if t.number in front else "")
    return header, rows


# ----- HTML -----
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;
padding:0 16px;color:#1d1d1f}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.arch{white-space:nowrap}
tr.complete td:first-child{border-left:3px solid #009E73}
tr.rejected{color:#666}tr.rejected td:first-child{border-left:3px solid #E69F00}
tr.failed td:first-child,tr.diverged td:first-child,tr.oom td:first-child{border-left:3px solid #D55E00}
.facts td:first-child{font-weight:600;background:#fafafa}
figure{margin:16px 0}figcaption{color:#555;font-size:13px;max-width:900px}
.plots{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:flex-start}
.plots figure{margin:8px 0;max-width:100%}.plots figcaption{max-width:620px}
img.plot{max-width:100%;border:1px solid #eee}
.cards{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;width:340px}
.card img{image-rendering:pixelated;width:160px;height:auto;float:left;margin:0 10px 6px 0;
border:1px solid #eee}
.card .why{clear:both;white-space:pre-wrap;color:#333;font-size:13px}
.answer{border:1px solid #ddd;border-left:4px solid #009E73;border-radius:6px;padding:4px 14px;
overflow:auto}.answer p{font-size:15px}
.answer-grid{float:right;margin:8px 0 8px 16px}.answer-grid img{image-rendering:pixelated;width:192px}
code,.arch{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
small{color:#666}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _facts_html(facts: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _trials_html(record: SearchRecord) -> str:
    header, rows = trial_table(record)
    numeric = {0, 1, 4, 5, 6, 7, 10}  # right-aligned, never wrapped
    if "latency ms" in header:
        numeric.add(header.index("latency ms"))
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for t, row in zip(record.trials, rows):
        cells = []
        for i, value in enumerate(row):
            attrs = ' class="num"' if i in numeric else ""
            if i == 3 and t.arch is not None:
                attrs = f' class="arch" title="{_e(t.arch.summary())}"'
            elif i in (6, 7) and (score := t.proxy if i == 6 else t.final) is not None:
                attrs = f' class="num" title="{_e(score.label)}: {_e(score.protocol_text)}"'
            cells.append(f"<td{attrs}>{_e(value)}</td>")
        status = t.status if t.status in ("complete", "rejected") else "failed"
        body.append(f'<tr class="{status} {_e(t.status)}">{"".join(cells)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cards_html(record: SearchRecord) -> str:
    """Each evaluated candidate, best first: its samples, architecture, scores and rationale."""
    ranked = sorted(
        (t for t in record.trials if t.samples is not None),
        key=lambda t: (t.proxy is None, t.proxy.value if t.proxy else 0.0, t.number),
    )
    cards = []
    for t in ranked:
        assert t.samples is not None
        image = _data_uri(t.samples.read_bytes())
        if t.final_samples is not None:  # the promoted candidate after its final training
            image_html = (
                f'<img src="{_data_uri(t.final_samples.read_bytes())}" '
                f'alt="samples of trial {t.number} after the final training" '
                f'title="after the final training">'
                f'<img src="{image}" alt="samples of trial {t.number}" '
                f'title="after the proxy training">'
            )
        else:
            image_html = f'<img src="{image}" alt="samples of trial {t.number}">'
        scores = f"<br>proxy {_e(_score_text(t.proxy))}"
        if t.final is not None:
            scores += f"<br>final {_e(_score_text(t.final))}"
        why = f'<div class="why">{_e(t.rationale)}</div>' if t.rationale else ""
        cards.append(
            f'<div class="card" id="{_e(record.name)}-trial-{t.number}">{image_html}'
            f"<b>trial {t.number}</b> <small>round {t.round + 1}, {_e(t.by)}</small>"
            f'<br><span class="arch">{_e(t.short_arch)}</span>'
            f"<br>{_num(t.params_m, 3)} M params, {_num(t.gmacs, 3)} GMACs{scores}{why}</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>' if cards else "<p>No samples yet.</p>"


def _unevaluated_html(record: SearchRecord) -> str:
    """Proposals that were never sampled: what the proposer said and why it stopped there."""
    items = [
        f"<li><b>trial {t.number}</b> ({_e(t.status)}): {_e(t.reason or '-')}"
        + (f"<br><small>rationale: {_e(t.rationale)}</small>" if t.rationale else "")
        + "</li>"
        for t in record.trials
        if t.samples is None
    ]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _ledger_html(ledger: Ledger | None) -> str:
    if ledger is None:
        return "<p>No LLM was asked (a baseline proposer).</p>"
    table = _facts_html(_ledger_cells(ledger))
    if not ledger.calls:
        return table
    rows = [
        [
            str(i + 1),
            "ok" if c.ok else "failed",
            f"{c.prompt_tokens:,}",
            f"{c.completion_tokens:,}",
            f"{c.latency_s:.2f}",
            f"${c.cost_usd:.5f}",
            str(c.attempts),
            "yes" if c.replayed else "",
        ]
        for i, c in enumerate(ledger.calls)
    ]
    calls = _html_table(
        ("call", "result", "prompt tokens", "completion tokens", "latency s", "cost", "attempts",
         "replayed"),
        rows,
    )  # fmt: skip
    return f"{table}<details><summary>every call ({len(rows)})</summary>{calls}</details>"


def render_html(records: Sequence[SearchRecord], figures: Sequence[Figure]) -> str:
    names = ", ".join(r.name for r in records)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>diffnas report: {_e(names)}</title><style>{CSS}</style></head><body>",
        f"<h1>diffnas search report</h1><p><small>{_e(names)} · written "
        f"{_e(time.strftime('%Y-%m-%d %H:%M'))} by diffnas {_e(__version__)}</small></p>",
    ]
    for record in records:
        found = answer(record)
        heading = "Answer" if len(records) == 1 else f"Answer: {record.name}"
        grid = (
            f'<figure class="answer-grid"><img src="{_data_uri(found.grid.read_bytes())}" '
            f'alt="{_e(found.grid_caption)}"><figcaption>{_e(found.grid_caption)}</figcaption>'
            "</figure>"
            if found.grid is not None
            else ""
        )
        sentences = "".join(f"<p>{_e(s)}</p>" for s in found.sentences)
        parts.append(f'<section class="answer"><h2>{_e(heading)}</h2>{grid}{sentences}</section>')
    labels = {r.proxy_label for r in records}
    if len(labels) > 1:
        parts.append(
            f"<p><b>Note:</b> the runs rank by different scores ({_e(', '.join(sorted(labels)))}); "
            "their values do not compare across runs.</p>"
        )
    if figures:
        parts.append('<h2>Plots</h2><div class="plots">')
        for f in figures:
            parts.append(
                f'<figure id="{_e(f.name)}"><img class="plot" src="{_data_uri(f.png)}" '
                f'alt="{_e(f.title)}"><figcaption>{_e(f.caption)}</figcaption></figure>'
            )
        parts.append("</div>")
    for record in records:
        parts += [
            f'<h2 id="{_e(record.name)}">{_e(record.name)}</h2>',
            _facts_html(_run_facts(record)),
            "<h3>Trials</h3>",
            _trials_html(record),
            "<h3>Candidates, best first</h3>",
            _cards_html(record),
            _unevaluated_html(record),
            "<h3>LLM ledger</h3>",
            _ledger_html(record.ledger),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


# ----- Markdown -----
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(markdown_table(header, rows))


def render_markdown(records: Sequence[SearchRecord], figures: Sequence[Figure]) -> str:
    parts = [f"# diffnas search report: {md_text(', '.join(r.name for r in records))}", ""]
    for i, record in enumerate(records):
        found = answer(record)
        heading = "Answer" if len(records) == 1 else f"Answer: {record.name}"
        parts += [f"## {md_text(heading)}", ""]
        parts += [f"**{md_text(found.sentences[0])}**", ""]
        parts += [md_text(s) for s in found.sentences[1:]] + [""]
        if found.grid is not None:
            parts += [f"![{md_text(found.grid_caption)}]({PLOTS_DIR}/{WINNER_GRID}-{i}.png)", ""]
    for f in figures:
        parts += [f"![{f.title}]({PLOTS_DIR}/{f.name}.png)", "", f"*{md_text(f.caption)}*", ""]
    for record in records:
        parts += [f"## {md_text(record.name)}", "", _md_table(("", ""), _run_facts(record)), ""]
        parts += ["### Trials", "", _md_table(*trial_table(record)), ""]
        said = [t for t in record.trials if t.rationale]
        if said:
            parts += ["### Rationales", ""]
            parts += [f"- trial {t.number} ({t.status}): {md_text(t.rationale)}" for t in said]
            parts.append("")
        parts += ["### LLM ledger", ""]
        if record.ledger is None:
            parts.append("No LLM was asked (a baseline proposer).")
        else:
            parts.append(_md_table(("", ""), _ledger_cells(record.ledger)))
        parts.append("")
    return "\n".join(parts)
