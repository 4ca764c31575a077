"""How a child process ended, in the words every report of it uses (workers, the local LLM)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from diffnas.childproc import describe_exit, signal_name


def test_exit_codes_and_signals_in_words() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-11) == "died with signal SIGSEGV (-11)"
    assert describe_exit(-9) == (
        "died with signal SIGKILL (-9) (the out-of-memory killer, or killed by hand)"
    )
    assert describe_exit(-200) == "died with signal 200 (-200)"  # no such signal name
    assert signal_name(0) is None and signal_name(-15) == "SIGTERM"


@pytest.mark.parametrize(
    ("code", "words"),
    [("raise SystemExit(5)", "exited with code 5"),
     ("import os; os.kill(os.getpid(), 9)", "died with signal SIGKILL (-9)")],
)  # fmt: skip
def test_a_real_child_is_described_by_how_it_ended(code: str, words: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], check=False)
    assert describe_exit(done.returncode).startswith(words)
    assert (done.returncode == -signal.SIGKILL) == ("SIGKILL" in words)
