"""Child processes: they must not outlive the process that started them, and how one ended
is said one way wherever it is reported."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies, so no orphan keeps running.

    The kernel ties this to the parent *thread* that started the child, so start such children
    from a long-lived thread (the main one). Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def signal_name(returncode: int) -> str | None:
    """The signal that ended a child (`SIGSEGV` for -11), or None when it exited by itself."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: int) -> str:
    """How a child ended, for a message: `exited with code 1`, `died with signal SIGSEGV
    (-11)`, `died with signal SIGKILL (-9) (the out-of-memory killer, or killed by hand)`."""
    name = signal_name(returncode)
    if name is None:
        return f"exited with code {returncode}"
    hint = " (the out-of-memory killer, or killed by hand)" if name == "SIGKILL" else ""
    return f"died with signal {name.removeprefix('signal ')} ({returncode}){hint}"
