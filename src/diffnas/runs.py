"""Numbered run folders, resolved options as JSON and stats as JSONL (the EDM way).

A run folder is `ROOT/00007-KIND-DESC`: the number is one more than the highest already
under ROOT, so folders sort in creation order and never collide.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffnas.errors import UserError

_RUN_RE = re.compile(r"^(\d{5})-")
OPTIONS_FILE = "options.json"  # every run folder's resolved options


def next_run_dir(root: str | Path, kind: str, desc: str = "") -> Path:
    """Create and return the next numbered run folder under `root` (the `--runs` option).

    Call it only once every input is validated: a refusal after it leaves an empty folder.
    """
    root = Path(root)
    try:
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(0, "a file, not a folder")
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where the folder should be, no permission, ...
        raise UserError(
            f"--runs {str(root)!r} cannot hold run folders: {err.strerror or err}; "
            "give a folder (it is created if missing)",
            field="runs",
        ) from None
    while True:
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := _RUN_RE.match(p.name))]
        number = max(numbers, default=-1) + 1
        name = f"{number:05d}-{kind}" + (f"-{_slug(desc)}" if desc else "")
        path = root / name
        try:
            path.mkdir()  # atomic: two processes never get the same folder
            return path
        except FileExistsError:
            continue


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:60]


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (write to a temp file, then rename) so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_run_json(path: str | Path, what: str = "run folder file") -> Any:
    """A JSON file of a run folder the user named; a missing, unreadable or corrupt one is a `UserError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} does not exist", field=path.name) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(
            f"{what} {str(path)!r} is not valid JSON ({type(err).__name__}: {err}); "
            "the file is damaged: restore it or start a new run",
            field=path.name,
        ) from None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record; flushed and fsynced so a killed run keeps every line it wrote."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read records, skipping a torn last line left by a kill."""
    path = Path(path)
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
