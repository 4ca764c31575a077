"""Numbered run folders, resolved options as JSON and stats as JSONL (the EDM way).

A run folder is `ROOT/00007-KIND-DESC`: the number is one more than the highest already
under ROOT, so folders sort in creation order and never collide.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from diffnas.errors import UserError, first_field, pydantic_message

_RUN_RE = re.compile(r"^(\d{5})-")
OPTIONS_FILE = "options.json"  # every run folder's resolved options
Options = TypeVar("Options", bound=BaseModel)


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


def load_options(
    run_dir: str | Path, model: type[Options], *, kind: str, option: str = "--resume"
) -> Options:
    """The saved options of a `kind` run folder ("train", "search", ...) validated by `model`.

    A missing, unreadable or invalid options.json is a `UserError` naming the folder or file;
    `option` is how the user named the folder (`--resume`, or "" for an argument).
    """
    run_dir = Path(run_dir)
    path = run_dir / OPTIONS_FILE
    if not path.is_file():
        named = f"{option} {str(run_dir)!r}".strip()
        raise UserError(
            f"{named}: no {OPTIONS_FILE} there; is it a {kind} run folder?",
            field=option.lstrip("-") or "run_dir",
        )
    raw = read_run_json(path, f"{kind} options")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UserError(
            pydantic_message(err, f"{kind} options in {str(path)!r}"),
            field=first_field(err, kind),
        ) from None


def refuse_on_resume(ctx: Any, allowed: Iterable[str]) -> None:
    """`--resume` continues a run with its saved options: any option but `allowed` is refused.

    `ctx` is the command's click context, asked which parameters were typed.
    """
    allowed = set(allowed)
    given = given_options(ctx, ignore={"resume", *allowed})
    if given:
        may = [_spelling(p) for p in ctx.command.params if p.name in allowed]
        raise UserError(
            f"--resume continues a run with its saved options; drop {', '.join(given)} "
            f"(with --resume only {', '.join(may) or 'nothing else'} may be given)",
            field="resume",
        )


def given_options(ctx: Any, ignore: Iterable[str] = ()) -> list[str]:
    """The options and arguments typed on the command line (not left at their default).

    Asked of click's parameter sources, so an option given with its default value counts
    as given, and an option added to a command later is covered without a list to update.
    """
    skip = set(ignore)
    given = []
    for param in ctx.command.params:
        if param.name in skip or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(_spelling(param))
    return given


def _spelling(param: Any) -> str:
    """How the user writes a parameter: its long option (`--num`, not `-n`) or ARGUMENT."""
    if not param.opts[0].startswith("-"):
        return param.name.upper()
    return max(param.opts, key=lambda opt: opt.startswith("--"))


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
