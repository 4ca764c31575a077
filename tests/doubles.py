"""Loopback test doubles: real HTTP servers on 127.0.0.1 that speak the LLM APIs from a script.

    with OpenAILoopback() as server:
        server.push_fault(status=429, retry_after=0)
        server.push_text('{"blocks": [64, 128]}')
        backend = OpenAIBackend("gpt-4o-mini", base_url=server.base_url, ...)
        ...
        assert len(server.requests) == 2

Each request pops the next scripted reply: a text answer, or a fault (HTTP status with an
optional `retry-after`, a `delay` that outlasts the client's timeout, or a broken JSON body).
With `responder=fn`, `fn(request_json) -> str | Reply` answers when the script is empty, for
dynamic answers (e.g. echo a proposal built from the prompt). With neither, the server replies
HTTP 418 "script exhausted", which is not retried, so a test that under-scripts fails loudly.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text (status 200) or a fault."""

    text: str | None = None
    status: int = 200
    retry_after: float | None = None  # sent as the `retry-after` header (seconds)
    delay: float = (
        0.0  # seconds to wait before answering (longer than the client timeout = timeout)
    )
    broken_json: bool = False  # a 200 whose body is not JSON
    prompt_tokens: int | None = None  # default: words in the request's messages
    completion_tokens: int | None = None  # default: words in `text`


Responder = Callable[[dict[str, Any]], "str | Reply"]


class _Loopback:
    """Shared server machinery; subclasses render the provider's wire format."""

    path = "/"

    def __init__(self, responder: Responder | None = None, model: str = "loopback-model") -> None:
        self.responder = responder
        self.model = model
        self.requests: list[dict[str, Any]] = []  # parsed JSON bodies, in arrival order
        self.headers: list[dict[str, str]] = []  # their headers (lower-case names)
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script API -------------------------------------------------------------------------
    def push_text(self, text: str, **fields: Any) -> None:
        """Queue a successful answer with content `text` (fields: prompt/completion_tokens)."""
        self.push(Reply(text=text, **fields))

    def push_json(self, value: Any, **fields: Any) -> None:
        """Queue an answer whose content is `value` as JSON (e.g. a proposal dict)."""
        self.push_text(json.dumps(value), **fields)

    def push_fault(
        self,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        broken_json: bool = False,
        text: str = "{}",
    ) -> None:
        """Queue a fault: an HTTP error `status` (default 500), a slow answer (`delay` seconds,
        status 200 after it) or a 200 with a `broken_json` body."""
        if status is None:
            status = 200 if (delay or broken_json) else 500
        self.push(
            Reply(
                text=text,
                status=status,
                retry_after=retry_after,
                delay=delay,
                broken_json=broken_json,
            )
        )

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def last_request(self) -> dict[str, Any]:
        """The JSON body of the latest request (to look at the prompt the client sent)."""
        with self._lock:
            return self.requests[-1]

    @property
    def pending(self) -> int:
        """Scripted replies not yet served."""
        with self._lock:
            return len(self._script)

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval makes `shutdown()` (hence each test) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # wakes handlers sleeping on a `delay`
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "use the server as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- request handling -------------------------------------------------------------------
    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            answer = self.responder(body)
            return answer if isinstance(answer, Reply) else Reply(text=answer)
        return Reply(text="loopback script exhausted", status=418)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode(errors="replace")}
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        if handler.path.rstrip("/") != self.path:
            self._send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
            return
        reply = self._next_reply(body)
        if reply.delay and self._closing.wait(reply.delay):
            return
        headers = {} if reply.retry_after is None else {"retry-after": f"{reply.retry_after:g}"}
        if reply.broken_json:
            self._send(handler, reply.status, None, headers, raw=b'{"choices": [ {"mess')
        elif reply.status != 200:
            self._send(handler, reply.status, self.error_body(reply), headers)
        else:
            prompt = reply.prompt_tokens
            if prompt is None:
                prompt = sum(
                    len(str(m.get("content", "")).split()) for m in body.get("messages", [])
                )
            completion = reply.completion_tokens
            if completion is None:
                completion = len((reply.text or "").split())
            self._send(handler, 200, self.success_body(body, reply.text or "", prompt, completion))

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to tell it

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                loopback._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

        return Handler

    # -- provider wire formats --------------------------------------------------------------
    def success_body(self, request: dict[str, Any], text: str, prompt: int, completion: int) -> Any:
        raise NotImplementedError

    def error_body(self, reply: Reply) -> Any:
        raise NotImplementedError


class OpenAILoopback(_Loopback):
    """Speaks `POST /v1/chat/completions`; give the client `base_url=server.base_url`."""

    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def success_body(self, request: dict[str, Any], text: str, prompt: int, completion: int) -> Any:
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def error_body(self, reply: Reply) -> Any:
        detail = f": {reply.text}" if reply.text and reply.text != "{}" else ""
        return {"error": {"message": f"loopback fault {reply.status}{detail}", "type": "loopback"}}


class AnthropicLoopback(_Loopback):
    """Speaks `POST /v1/messages`; give the client `base_url=server.base_url`."""

    path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.url

    def success_body(self, request: dict[str, Any], text: str, prompt: int, completion: int) -> Any:
        return {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", self.model),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }

    def error_body(self, reply: Reply) -> Any:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(reply.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": f"loopback fault {reply.status}"},
        }


class _KeyEchoing:
    """A careless endpoint: its errors quote the request's headers, the key among them."""

    headers: list[dict[str, str]]

    def error_body(self, reply: Reply) -> Any:
        headers = self.headers[-1]
        credential = headers.get("authorization") or headers.get("x-api-key", "")
        return {
            "type": "error",
            "error": {
                # padded so that the key sits where a 300-character cut would split it
                "message": "x" * 200 + f" invalid credential {credential}; you sent: {headers}",
                "type": "authentication_error",
                "key_seen": credential.removeprefix("Bearer "),
            },
        }


class KeyEchoingOpenAI(_KeyEchoing, OpenAILoopback):
    """`OpenAILoopback` whose error bodies echo the `Authorization` header and the key."""


class KeyEchoingAnthropic(_KeyEchoing, AnthropicLoopback):
    """`AnthropicLoopback` whose error bodies echo the `x-api-key` header and the key."""
