"""Headless Chromium driven over the DevTools protocol, for tests that need a real browser.

    page = render("file:///.../report.html", width=1200, height=2000)
    assert page.errors == [] and page.broken_images == []

Chromium is started with `--remote-debugging-pipe`: it reads NUL-terminated JSON commands on
file descriptor 3 and writes answers and events on 4, so no port, no websocket library and
no network are involved. The page's uncaught exceptions, `console.error` calls and failed
loads are collected, every `<img>` is checked to have decoded (natural width > 0), and a
screenshot of the viewport is taken.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--remote-debugging-pipe",
)  # fmt: skip


def chromium_path() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@dataclass
class Page:
    images: int  # <img> elements on the page
    broken_images: list[str]  # their alt texts (or src heads) when they did not decode
    errors: list[str]  # uncaught exceptions, console errors, failed loads
    screenshot: bytes  # PNG of the viewport
    title: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


class _Pipe:
    """The DevTools protocol over the two pipes: commands, answers, buffered events."""

    def __init__(self, write_fd: int, read_fd: int, timeout_s: float) -> None:
        self.write_fd, self.read_fd, self.timeout_s = write_fd, read_fd, timeout_s
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.read_fd], [], [], self.timeout_s)
            if not ready:
                raise TimeoutError(f"chromium sent nothing for {self.timeout_s} s")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        command: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.write_fd, json.dumps(command).encode() + b"\0")
        while True:
            message = self._read()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        for message in self.events:
            if message.get("method") == event:
                return message
        while True:
            message = self._read()
            self.events.append(message)
            if message.get("method") == event:
                return message


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in events:
        method, params = m.get("method"), m.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(params["entry"]["text"])
    return out


def render(url: str, width: int = 1200, height: int = 2000, timeout_s: float = 60) -> Page:
    """Open `url` in a fresh headless Chromium, wait for its load event and inspect it."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    to_chromium_r, to_chromium_w = os.pipe()
    from_chromium_r, from_chromium_w = os.pipe()

    def on_fds_3_and_4() -> None:  # in the child: the pipes become fds 3 and 4
        a = fcntl.fcntl(to_chromium_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chromium_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    # Chromium's helper processes (zygote, renderer, GPU) outlive a kill of the browser alone
    # and were still writing the profile as it was removed: it runs in a process group of its
    # own, killed whole
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"],
            preexec_fn=on_fds_3_and_4,
            start_new_session=True,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chromium_r)
        os.close(from_chromium_w)
        try:
            pipe = _Pipe(to_chromium_w, from_chromium_r, timeout_s)
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            viewport = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            pipe.call("Emulation.setDeviceMetricsOverride", viewport, session)
            pipe.call("Page.navigate", {"url": url}, session)
            pipe.wait_for("Page.loadEventFired")

            def evaluate(expression: str) -> Any:
                result = pipe.call(
                    "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
                )
                return result["result"].get("value")

            images = evaluate("document.images.length")
            broken = evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                ".map(i => i.alt || i.src.slice(0, 60))"
            )
            title = evaluate("document.title")
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            return Page(
                images=images,
                broken_images=broken,
                errors=_errors(pipe.events),
                screenshot=base64.b64decode(shot),
                title=title,
                events=pipe.events,
            )
        finally:
            os.close(to_chromium_w)
            os.close(from_chromium_r)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
