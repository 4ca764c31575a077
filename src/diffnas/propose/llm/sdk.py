"""What the two SDK backends (openai, anthropic) share: the key, our retries, timing and cost.

A subclass builds its client and says how to turn a request into call parameters
(`_params`), make the call (`_create`) and read text and token counts from the answer
(`_read`); `complete` wraps that call in our retry policy and prices it.
"""

from __future__ import annotations

import os
import random
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMBackend, LLMRequest, LLMResponse
from diffnas.propose.llm.ledger import PriceTable
from diffnas.propose.llm.retry import Fault, RetryPolicy, call_with_retries, classify_sdk_error


def read_api_key(env_var: str, *, required: bool, backend: str) -> str | None:
    """The key from `env_var`, or a UserError that says which variable to set."""
    key = os.environ.get(env_var, "").strip()
    if key:
        return key
    if required:
        raise UserError(
            f"the {backend} backend needs an API key: set the environment variable {env_var} "
            f"(keys are read only from the environment, never from files or flags)",
            field="api_key_env",
        )
    return None


class SDKBackend(LLMBackend):
    """An HTTP API reached through its official SDK client, with our retries (the SDK's are off)."""

    provider = "sdk"

    def __init__(
        self,
        model: str,
        client: Any,
        connection_errors: tuple[type[BaseException], ...],
        *,
        retry: RetryPolicy | None,
        prices: PriceTable | None,
        sleep: Callable[[float], None],
        rng: random.Random | None,
    ) -> None:
        self._client = client  # holds the key; this object stores no copy of it
        self._connection_errors = connection_errors
        self.model = model
        self.endpoint = f"{self.provider}:{model}@{client.base_url}"
        self.retry = retry or RetryPolicy()
        self.prices = prices or PriceTable()
        self._sleep = sleep
        self._rng = rng or random.Random()

    @abstractmethod
    def _params(self, request: LLMRequest) -> dict[str, Any]: ...

    @abstractmethod
    def _create(self, params: dict[str, Any]) -> Any: ...

    @abstractmethod
    def _read(self, answer: Any) -> tuple[str, str | None, int, int]:
        """(text, model name, prompt tokens, completion tokens) of one answer."""

    def _classify(self, exc: BaseException, secrets: tuple[str | None, ...]) -> Fault | None:
        """What went wrong in one attempt (None: not the endpoint's fault, raised as is)."""
        return classify_sdk_error(exc, self._connection_errors, secrets)

    def complete(self, request: LLMRequest) -> LLMResponse:
        params = self._params(request)
        start = time.perf_counter()
        # The key is read back from the client for redaction only: an error body may echo it.
        secrets = (getattr(self._client, "api_key", None),)
        outcome = call_with_retries(
            lambda: self._create(params),
            lambda exc: self._classify(exc, secrets),
            endpoint=self.endpoint,
            policy=self.retry,
            sleep=self._sleep,
            rng=self._rng,
            secrets=secrets,
        )
        text, model, prompt_tokens, completion_tokens = self._read(outcome.value)
        return LLMResponse(
            text=text,
            model=model or self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - start,
            cost_usd=self.prices.cost(self.model, prompt_tokens, completion_tokens),
            attempts=outcome.attempts,
            errors=outcome.errors,
        )
