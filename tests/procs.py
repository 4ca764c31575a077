"""Processes as Linux's /proc shows them, for the tests that kill workers and watch who dies."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent, ...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def parents() -> dict[int, int]:
    """Every process's parent: pid -> parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(entry.name) if entry.name.isdigit() else None
        if stat is not None:
            found[int(entry.name)] = int(stat[1])
    return found


def children(pid: int) -> list[int]:
    """The running (not zombie) children of `pid`."""
    return [c for c, parent in parents().items() if parent == pid and is_running(c)]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: its children, theirs, and so on."""
    tree = parents()

    def below(child: int) -> bool:
        while child in tree and child != pid:
            child = tree[child]
        return child == pid

    return [c for c in tree if c != pid and below(c)]
