"""The LLM screener: the language model predicts each candidate's score from the search memory
(LLAMBO's "LLM as surrogate model"), and the candidates are ranked by its predictions.

One request per screening: the system prompt, then `screen.txt` (task, space, budget and
reference, the search memory as the proposer sees it, the candidates with their measured
cost), answered with one JSON object `{"scores": [s1, ..., sN]}`: exactly one number per
candidate, in order. The request carries that JSON schema, so the embedded model is held to
it by its grammar and API models by their structured-output mode. An answer that is not that
(not JSON, too few or too many numbers, a string, NaN) gets a repair turn in the same
conversation naming what was wrong, up to `max_repairs` times, as proposals do. When no
usable answer comes, or the endpoint is unavailable, the proposer's order is kept and the
round file says why; a spent LLM budget stops the search as it does for proposals.

Predictions are asked at temperature 0 by default (a prediction is the model's best guess,
not a sample) with the request's seed, so the same memory and candidates give the same
request: `--resume` and `--replay` find its answer in `llm/calls.jsonl`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from string import Template
from typing import Any

from jsonschema import Draft202012Validator

from diffnas.errors import UserError
from diffnas.propose.llm import ChatMessage, LLMBackend, LLMRequest, LLMUnavailable
from diffnas.propose.parse import AnswerError, extract_json
from diffnas.propose.prompt import TEMPLATE_DIR, MemoryLayout, PromptTemplates, memory_entries
from diffnas.propose.screen.base import (
    ORDER_KEPT,
    Candidate,
    Ranking,
    ScreenContext,
    Screener,
    order_by,
    proposer_order,
)
from diffnas.space.search_space import SearchSpace

SCREEN_TEMPLATE = "screen.txt"
SCREEN_PLACEHOLDERS = ("task", "space", "reference", "memory", "n", "candidates", "score_name")


def prediction_schema(n: int) -> dict[str, Any]:
    """JSON schema of an answer: exactly `n` numbers under "scores"."""
    return {
        "type": "object",
        "properties": {
            "scores": {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n}
        },
        "required": ["scores"],
        "additionalProperties": False,
    }


def parse_predictions(text: str, n: int) -> list[float]:
    """The `n` predicted scores of an answer, or `AnswerError` saying what is wrong with it."""
    data = extract_json(text)  # bounded in length and depth before decoding
    problems = []
    for err in Draft202012Validator(prediction_schema(n)).iter_errors(data):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator in ("minItems", "maxItems") and isinstance(err.instance, list):
            problems.append(f"you sent {len(err.instance)} numbers, exactly {n} are needed")
        else:
            message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
            problems.append(f"schema error at {where}: {message}")
    if problems:
        raise AnswerError("; ".join(problems))
    values = [float(v) for v in data["scores"]]
    bad = [i + 1 for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise AnswerError(f"the scores of candidate(s) {bad} are not finite numbers")
    return values


def candidate_line(space: SearchSpace, index: int, candidate: Candidate) -> str:
    cost = []
    if candidate.gmacs is not None:
        cost.append(f"{candidate.gmacs:.3g} GMACs")
    if candidate.params_m is not None:
        cost.append(f"{candidate.params_m:.3g} M params")
    arch = json.dumps(space.proposal_of(candidate.arch), separators=(",", ":"))
    return f"candidate {index + 1}: {arch}" + (f" -> {', '.join(cost)}" if cost else "")


class ScreenTemplate:
    """`screen.txt`: ours, or a same-named file in `prompt_dir` (as for the other prompts)."""

    def __init__(self, prompt_dir: str | Path | None = None) -> None:
        override = Path(prompt_dir) / SCREEN_TEMPLATE if prompt_dir is not None else None
        self.source = override if override is not None and override.is_file() else None
        self.source = self.source or TEMPLATE_DIR / SCREEN_TEMPLATE
        self.text = self.source.read_text(encoding="utf-8").strip()

    def render(self, **values: Any) -> str:
        try:
            return Template(self.text).substitute(values)
        except (KeyError, ValueError) as err:
            allowed = ", ".join(f"${p}" for p in SCREEN_PLACEHOLDERS)
            raise UserError(
                f"prompt template {str(self.source)!r} has a bad placeholder ({err}); "
                f"allowed: {allowed} (write $$ for a literal $)",
                field="prompt_dir",
            ) from None


class LLMScreener(Screener):
    """Ranks by the scores the LLM predicts; keeps the proposer's order when it cannot."""

    name = "llm"

    def __init__(
        self,
        backend: LLMBackend,
        *,
        prompt_dir: str | Path | None = None,
        max_repairs: int = 2,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        memory_layout: MemoryLayout | None = None,
    ) -> None:
        self.backend = backend
        self.templates = PromptTemplates(prompt_dir)  # system.txt and memory.txt
        self.screen_template = ScreenTemplate(prompt_dir)
        self.max_repairs = max_repairs
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.memory_layout = memory_layout or MemoryLayout()

    def messages(self, ctx: ScreenContext) -> list[ChatMessage]:
        entries = memory_entries(ctx.memory, ctx.space, self.memory_layout, ctx.score_name)
        memory = self.templates.render(
            "memory.txt",
            count=len(ctx.memory),
            entries="\n".join(entries) if entries else "(none yet: nothing has been measured)",
            score_name=ctx.score_name,
            front="",  # a screener predicts the score alone: no Pareto front to extend
        )
        user = self.screen_template.render(
            task=ctx.task,
            space=ctx.space.describe(),
            reference=ctx.reference_line,
            memory=memory,
            n=len(ctx.candidates),
            candidates="\n".join(
                candidate_line(ctx.space, i, c) for i, c in enumerate(ctx.candidates)
            ),
            score_name=ctx.score_name,
        )
        system = self.templates.render("system.txt", score_name=ctx.score_name)
        return [
            ChatMessage(role="system", content=system.strip()),
            ChatMessage(role="user", content=_tidy(user)),
        ]

    def predict(self, ctx: ScreenContext) -> tuple[list[float] | None, str]:
        """(one predicted score per candidate, or None; what happened, in words)."""
        n = len(ctx.candidates)
        messages = self.messages(ctx)
        problem = ""
        for turn in range(self.max_repairs + 1):
            request = LLMRequest(
                messages=messages,
                schema=prediction_schema(n),
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=ctx.seed,
            )
            try:
                text = self.backend.complete(request).text
            except LLMUnavailable as err:
                return None, f"the LLM was unavailable ({err}){ORDER_KEPT}"
            try:
                values = parse_predictions(text, n)
            except AnswerError as err:
                problem = str(err)
                messages = [
                    *messages,
                    ChatMessage(role="assistant", content=text),
                    ChatMessage(role="user", content=repair_text(problem, n, ctx.score_name)),
                ]
                continue
            return values, f"LLM predictions ({turn + 1} call(s))"
        return None, (
            f"no usable prediction in {self.max_repairs + 1} call(s) (last: {problem}){ORDER_KEPT}"
        )

    def rank(self, ctx: ScreenContext) -> Ranking:
        values, info = self.predict(ctx)
        if values is None:
            return proposer_order(ctx, info)
        return Ranking(
            order=order_by(values),
            predicted=list(values),
            notes=[f"LLM {v:.4g}" for v in values],
            info=info,
        )


def repair_text(problem: str, n: int, score_name: str) -> str:
    return (
        f"Your answer cannot be used: {problem}. Answer again with one JSON object "
        f'{{"scores": [...]}} holding exactly {n} numbers, the predicted {score_name} of '
        f"candidate 1 to {n}, in that order."
    )


def _tidy(text: str) -> str:
    """Drop the blank runs that empty placeholders leave behind."""
    return re.sub(r"\n{3,}", "\n\n", text).strip()
