"""Any OpenAI-compatible chat-completions endpoint through the official `openai` SDK.

OpenAI, Azure OpenAI (its `/openai/v1` base URL), vLLM, Ollama, the llama.cpp server, LM Studio...
all speak this API; only the base URL and the key differ. The key is read from an environment
variable and handed to the client object only; it is never stored on this backend.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, get_args

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMRequest, LLMResponse, schema_instruction
from diffnas.propose.llm.ledger import PriceTable
from diffnas.propose.llm.redact import redact
from diffnas.propose.llm.retry import Fault, RetryPolicy, short_error
from diffnas.propose.llm.sdk import SDKBackend, read_api_key

#: How to ask for structured output. Servers take a JSON schema in their own ways:
#: - `json_schema`: OpenAI's `response_format` {"type": "json_schema", ...} (OpenAI, Azure, vLLM,
#:   Ollama >= 0.5, llama.cpp's C++ `llama-server`, LM Studio);
#: - `schema_object`: {"type": "json_object", "schema": ...} (llama-cpp-python's
#:   `llama_cpp.server`, which answers `json_schema` with HTTP 500; `llama-server` takes it too);
#: - `guided_json`: vLLM's own request field (vLLM before `json_schema` support);
#: - `json_object`: JSON mode, the schema only in the prompt;
#: - `text`: the schema only in the prompt;
#: - `auto` (default): `json_schema`, stepping down `FALLBACK` one mode at a time when the
#:   endpoint refuses the structured-output request itself, with a one-line notice.
StructuredMode = Literal[
    "auto", "json_schema", "schema_object", "guided_json", "json_object", "text"
]
STRUCTURED_MODES: tuple[str, ...] = get_args(StructuredMode)
#: What `auto` tries, in order: each constrains less than the one before.
FALLBACK: tuple[str, ...] = ("json_schema", "schema_object", "json_object", "text")
WIRE_FORM = {
    "json_schema": 'response_format {"type": "json_schema"}',
    "schema_object": 'response_format {"type": "json_object", "schema": ...} (llama.cpp)',
    "json_object": 'response_format {"type": "json_object"}, the schema in the prompt',
    "text": "the schema in the prompt only",
}
# Words of an error about the structured-output request itself (not the key, the model, ...)
_STRUCTURED_WORDS = ("response_format", "json_schema", "guided_json", "schema")


def _notify(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class OpenAIBackend(SDKBackend):
    """Chat completions with our retries, structured output and cost estimate."""

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        structured: StructuredMode = "auto",
        strict_schema: bool = False,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        notify: Callable[[str], None] = _notify,
    ) -> None:
        import openai

        if structured not in STRUCTURED_MODES:
            raise UserError(
                f"structured={structured!r} is not allowed; use one of {', '.join(STRUCTURED_MODES)}",
                field="structured",
            )
        # Self-hosted servers (vLLM, Ollama, llama.cpp) usually need no key; OpenAI itself does.
        key = read_api_key(api_key_env, required=base_url is None, backend="openai")
        client = openai.OpenAI(
            api_key=key or "not-needed",
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,  # retries are ours, so they are counted and their sleeps injectable
        )
        super().__init__(
            model, client, (openai.APIConnectionError,),
            retry=retry, prices=prices, sleep=sleep, rng=rng,
        )  # fmt: skip
        self.auto = structured == "auto"
        self.structured: str = FALLBACK[0] if self.auto else structured
        self.strict_schema = strict_schema
        self._notify = notify

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        messages = request.message_dicts()
        params: dict[str, Any] = {
            "model": self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        schema = request.json_schema
        if schema is not None and self.structured == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": self.strict_schema},
            }
        elif schema is not None:
            # Without OpenAI's schema mode the schema also goes into the prompt: a server that
            # takes it its own way is constrained, one that ignores it is still told.
            messages = [{"role": "system", "content": schema_instruction(schema)}, *messages]
            if self.structured == "schema_object":
                params["response_format"] = {"type": "json_object", "schema": schema}
            elif self.structured == "guided_json":
                params["extra_body"] = {"guided_json": schema}
            elif self.structured == "json_object":
                params["response_format"] = {"type": "json_object"}
        params["messages"] = messages
        return params

    def _create(self, params: dict[str, Any]) -> Any:
        return self._client.chat.completions.create(**params)

    def _refused_structure(self, exc: BaseException) -> bool:
        """An HTTP error about the structured-output request itself: a 4xx/5xx whose text
        names `response_format` or the schema (llama_cpp.server: HTTP 500, "response_format.type:
        input should be 'text' or 'json_object'"), never a key, rate or availability fault."""
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int) or status in (401, 403, 404, 408, 429, 502, 503, 504):
            return False
        if not 400 <= status < 600 or self.structured == "text":
            return False
        text = str(exc).lower()
        return any(word in text for word in _STRUCTURED_WORDS)

    def _classify(self, exc: BaseException, secrets: tuple[str | None, ...]) -> Fault | None:
        if self._refused_structure(exc):
            if self.auto:
                return None  # not retried: `complete` steps down to the next mode at once
            return Fault(
                False,
                f"HTTP {getattr(exc, 'status_code', '?')}: the endpoint refuses --structured "
                f"{self.structured}: {short_error(exc, secrets)} (--structured auto finds what it takes)",
            )
        return super()._classify(exc, secrets)

    def complete(self, request: LLMRequest) -> LLMResponse:
        refusals: list[str] = []
        while True:
            try:
                response = super().complete(request)
                break
            except Exception as exc:  # only a refusal of the structure is handled here
                if not (self.auto and self._refused_structure(exc)):
                    raise
                secrets = (getattr(self._client, "api_key", None),)
                refused = f"HTTP {getattr(exc, 'status_code', '?')}: {short_error(exc, secrets)}"
                refusals.append(redact(refused, secrets))
                before = self.structured
                self.structured = FALLBACK[FALLBACK.index(before) + 1]
                self._notify(
                    f"note: {self.endpoint} refused structured output {before} "
                    f"({short_error(exc, secrets, limit=120)}); using {self.structured}: "
                    f"{WIRE_FORM[self.structured]}"
                )
        if refusals:
            response = response.model_copy(update={"errors": refusals + response.errors})
        return response

    def _read(self, answer: Any) -> tuple[str, str | None, int, int]:
        text = (answer.choices[0].message.content or "") if answer.choices else ""
        usage = answer.usage
        return (
            text,
            answer.model,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )
