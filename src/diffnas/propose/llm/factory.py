"""`make_backend("openai:gpt-4o-mini", ...)`: one place that turns a user's choice into a backend."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMBackend
from diffnas.propose.llm.ledger import CostLedger, LLMBudget, PriceTable
from diffnas.propose.llm.openai_backend import STRUCTURED_MODES
from diffnas.propose.llm.record import RecordingBackend, ReplayBackend
from diffnas.propose.llm.retry import RetryPolicy
from diffnas.propose.llm.sdk import read_api_key

ALLOWED_SPECS = "'local', 'openai:MODEL', 'anthropic:MODEL' or 'replay:RUN_DIR'"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a backend spec into (provider, model-or-path), or raise a UserError."""
    provider, _, rest = spec.strip().partition(":")
    if provider == "local" and not rest:
        return "local", ""
    if provider in ("openai", "anthropic", "replay") and rest.strip():
        return provider, rest.strip()
    raise UserError(f"llm={spec!r} is not a backend spec; allowed: {ALLOWED_SPECS}", field="llm")


def check_structured(provider: str, structured: str | None) -> str:
    """The structured-output mode for `provider` (default: openai `auto`, which finds what the
    endpoint takes; anthropic `json_schema`), or a `UserError`."""
    mode = structured or ("auto" if provider == "openai" else "json_schema")
    allowed = {"openai": STRUCTURED_MODES, "anthropic": ("json_schema", "text")}.get(provider)
    if allowed is None:
        if structured is not None:
            raise UserError(
                f"structured={structured!r} applies to openai and anthropic only, not {provider}",
                field="structured",
            )
    elif mode not in allowed:
        raise UserError(
            f"structured={mode!r} is not allowed for {provider}; use one of {', '.join(allowed)}",
            field="structured",
        )
    return mode


def check_base_url(provider: str, base_url: str | None) -> None:
    """`--base-url` checked before anything runs: an http(s) URL with a host, for the openai
    and anthropic backends (the local model and a replay have no endpoint)."""
    if base_url is None:
        return
    if provider not in ("openai", "anthropic"):
        raise UserError(
            f"--base-url {base_url!r} applies to openai:MODEL and anthropic:MODEL only, "
            f"not {provider}",
            field="base_url",
        )
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port  # a port that is not a number raises here
    except ValueError as err:
        raise UserError(
            f"--base-url {base_url!r} is not a URL ({err}); give http(s)://HOST[:PORT]/PATH, "
            "e.g. http://127.0.0.1:8000/v1",
            field="base_url",
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise UserError(
            f"--base-url {base_url!r} is not an http(s) URL with a host; give "
            "http(s)://HOST[:PORT]/PATH, e.g. http://127.0.0.1:8000/v1",
            field="base_url",
        )


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_backend(
    spec: str,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    structured: str | None = None,
) -> None:
    """What `make_backend(spec, ...)` needs, checked before a run folder exists: the spec,
    the structured-output mode, the key variable (set, and a variable's name) and, for the
    local model, llama-cpp-python and the weights file. Nothing is loaded or called."""
    provider, _ = parse_spec(spec)
    check_structured(provider, structured)
    if api_key_env is not None and not ENV_NAME.fullmatch(api_key_env):
        raise UserError(
            f"--api-key-env {api_key_env!r} is not the name of an environment variable "
            "(letters, digits and _, not starting with a digit); give the variable that holds "
            "the key, e.g. OPENAI_API_KEY",
            field="api_key_env",
        )
    if provider == "openai":
        # self-hosted servers (vLLM, Ollama, llama.cpp) usually need no key; OpenAI itself does
        read_api_key(api_key_env or "OPENAI_API_KEY", required=base_url is None, backend="openai")
    elif provider == "anthropic":
        read_api_key(api_key_env or "ANTHROPIC_API_KEY", required=True, backend="anthropic")
    elif provider == "local":
        from diffnas.propose.llm.local_backend import require_llama_cpp, resolve_model_path

        require_llama_cpp()
        resolve_model_path()


def make_backend(
    spec: str,
    *,
    base_url: str | None = None,
    record_dir: str | Path | None = None,
    replay_dir: str | Path | None = None,
    api_key_env: str | None = None,
    structured: str | None = None,
    timeout_s: float = 120.0,
    retry: RetryPolicy | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    budget: LLMBudget | None = None,
    local_model_path: str | Path | None = None,
    n_ctx: int = 8192,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> LLMBackend:
    """Build the backend for `spec`, wrapped to record calls and enforce the budget.

    - `base_url`: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, Azure) or an
      Anthropic-compatible one; `api_key_env` names the environment variable holding the key.
    - `timeout_s` and `retry` apply to every backend: for `local`, a worker process that dies
      or does not answer in time is retried with a fresh one (`local_model_path`, else
      $DIFFNAS_LOCAL_MODEL, else the bundled SmolLM2).
    - `structured`: openai: 'json_schema' (default), 'json_object' or 'text' for servers that
      lack schema mode; anthropic: 'json_schema' (default) or 'text'.
    - `replay_dir`: answer from that run's recorded calls instead (spec is then ignored).
    - `record_dir`: append every call to `record_dir/llm/calls.jsonl`; if it already holds
      calls (a resumed run), those answers are served first.
    - `budget`: hard token/USD cap; the wrapper's `.ledger` raises `LLMBudgetExhausted`.
    The result is a `RecordingBackend` (with `.ledger`) whenever recording or a budget is asked.
    """
    provider, name = parse_spec(spec) if replay_dir is None else ("replay", str(replay_dir))
    if provider != "replay":
        check_base_url(provider, base_url)
    price_table = PriceTable(prices) if prices is not None else PriceTable()
    inner: LLMBackend
    if provider == "replay":
        inner = ReplayBackend(name)
    elif provider == "local":
        from diffnas.propose.llm.local_backend import LocalBackend

        inner = LocalBackend(
            model_path=local_model_path,
            n_ctx=n_ctx,
            timeout_s=timeout_s,
            retry=retry,
            sleep=sleep,
            rng=rng,
        )
    elif provider == "openai":
        from diffnas.propose.llm.openai_backend import OpenAIBackend

        mode = check_structured(provider, structured)
        inner = OpenAIBackend(
            name,
            base_url=base_url,
            api_key_env=api_key_env or "OPENAI_API_KEY",
            structured=mode,  # type: ignore[arg-type]
            timeout_s=timeout_s,
            retry=retry,
            prices=price_table,
            sleep=sleep,
            rng=rng,
        )
    else:
        from diffnas.propose.llm.anthropic_backend import AnthropicBackend

        mode = check_structured(provider, structured)
        inner = AnthropicBackend(
            name,
            base_url=base_url,
            api_key_env=api_key_env or "ANTHROPIC_API_KEY",
            structured=mode == "json_schema",
            timeout_s=timeout_s,
            retry=retry,
            prices=price_table,
            sleep=sleep,
            rng=rng,
        )
    priced = provider not in ("openai", "anthropic") or price_table.knows(name)
    if budget is not None and budget.max_usd is not None and not priced:
        raise UserError(
            f"budget.max_usd is set but model {name!r} has no price; pass prices={{{name!r}: "
            f"(input_usd_per_1M, output_usd_per_1M)}} or use budget.max_tokens",
            field="budget.max_usd",
        )
    if record_dir is None and budget is None:
        return inner
    secret_env_vars = [api_key_env] if api_key_env else []
    return RecordingBackend(
        inner, record_dir, ledger=CostLedger(budget), secret_env_vars=secret_env_vars
    )
