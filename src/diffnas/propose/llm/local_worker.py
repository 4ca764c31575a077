"""The local model's own process: `python -m diffnas.propose.llm.local_worker --model GGUF`.

(`--system-info` instead prints llama.cpp's CPU features as JSON and exits.)

llama.cpp is native code: a crash (an instruction the CPU refuses, a bad GGUF), a hang or an
out-of-memory kill there would take the whole search with it. So the model lives here, in a
child of the search, which `LocalBackend` drives over JSON lines:

- on start the worker loads the model once and writes `{"ok": true, "ready": true,
  "system_info": ...}` (llama.cpp's CPU features), or `{"ok": false, "error": ...}` and exits 1;
- then, for each request line `{"messages", "schema", "temperature", "max_tokens", "seed"}`
  read from stdin, it writes one reply line: `{"ok": true, "text", "prompt_tokens",
  "completion_tokens"}` or `{"ok": false, "error"}` (a Python-level failure of that request);
- at the end of stdin it frees the model and exits 0.

The protocol owns the real stdout; anything native code prints goes to stderr, which the
parent keeps out of the terminal (it shows the tail in its error messages: llama.cpp's
assertion failures, a Python traceback). The worker exits
when its parent dies and ignores Ctrl-C (the parent decides when it stops).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from diffnas.childproc import die_with_parent

#: Test hook, read once at start: `segfault`, `hang` or `garbage` on every request.
FAULT_ENV = "DIFFNAS_LOCAL_WORKER_FAULT"
PARENT_POLL_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffnas.propose.llm.local_worker")
    parser.add_argument("--model", help="GGUF file to load")
    parser.add_argument(
        "--system-info", action="store_true", help="print llama.cpp's CPU features and exit"
    )
    parser.add_argument("--n-ctx", type=int, default=8192, help="context length in tokens")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when it goes away")
    parser.add_argument(
        "--die-with-parent", action="store_true", help="Linux: SIGKILL when the parent dies"
    )
    args = parser.parse_args(argv)
    if args.system_info:
        from llama_cpp import llama_print_system_info

        print(json.dumps({"system_info": llama_print_system_info().decode(errors="replace")}))
        return 0
    if args.model is None:
        parser.error("--model is required")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.die_with_parent:
        die_with_parent()
    if args.parent_pid is not None:
        _watch_parent(args.parent_pid)
    replies = _take_stdout()
    try:
        from llama_cpp import Llama, llama_print_system_info

        # The seed here only sets the default; each request passes its own. llama.cpp's chatty
        # log stays off, so the stderr tail the parent shows holds what went wrong.
        llama = Llama(model_path=args.model, n_ctx=args.n_ctx, seed=0, verbose=False)
    except Exception as exc:  # a bad file or a missing package: report it, then stop
        _send(replies, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    system_info = llama_print_system_info().decode(errors="replace").strip()
    _send(replies, {"ok": True, "ready": True, "pid": os.getpid(), "system_info": system_info})
    fault = os.environ.get(FAULT_ENV, "")
    for line in sys.stdin.buffer:
        _send(replies, _answer(llama, line, fault, replies))
    llama.close()
    return 0


def _answer(llama: Any, line: bytes, fault: str, replies: IO[str]) -> dict[str, Any]:
    """One reply for one request line; every Python-level failure becomes `ok: false`."""
    try:
        request = json.loads(line)
        params: dict[str, Any] = {
            "messages": request["messages"],
            "temperature": float(request["temperature"]),
            "max_tokens": int(request["max_tokens"]),
            "seed": int(request["seed"]),
        }
        if request.get("schema") is not None:
            params["response_format"] = {"type": "json_object", "schema": request["schema"]}
        _inject_fault(fault, replies)
        result = llama.create_chat_completion(**params)
        usage = result.get("usage") or {}
        return {
            "ok": True,
            "text": result["choices"][0]["message"].get("content") or "",
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
        }
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _inject_fault(fault: str, replies: IO[str]) -> None:
    """The test hook: fail the way native code does, with a request in flight."""
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        while True:
            time.sleep(3600)
    elif fault == "garbage":
        replies.write("this is not a JSON reply\n")
        replies.flush()


def _take_stdout() -> IO[str]:
    """Keep the real stdout for replies; point fd 1 at stderr so native prints cannot corrupt it."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies


def _send(replies: IO[str], message: dict[str, Any]) -> None:
    replies.write(json.dumps(message, ensure_ascii=False) + "\n")
    replies.flush()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (re-parented): covers systems without PR_SET_PDEATHSIG."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
