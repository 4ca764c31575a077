"""The results console: no wrapping off a terminal, the terminal's width on one."""

from __future__ import annotations

import io

from diffnas import console as console_mod


def test_off_a_terminal_a_long_line_stays_one_line(monkeypatch) -> None:
    out = io.StringIO()  # not a terminal, like a log file or a pipe
    monkeypatch.setattr(console_mod.sys, "stdout", out)
    console = console_mod.output_console()
    line = "  trial 1: " + "ch=24 mult=(1,2) blocks=2 attn=8 head=16 drop=0.1 ss=n updown=res " * 3
    console.print(line + "(0.0581 GMACs) ...")
    assert out.getvalue().count("\n") == 1 and "(0.0581 GMACs)" in out.getvalue()
    assert console.width == console_mod.PIPE_WIDTH


def test_a_terminal_keeps_rich_defaults(monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(console_mod.sys, "stdout", Terminal())
    assert not console_mod.output_console().soft_wrap
