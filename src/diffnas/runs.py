"""Numbered run folders, resolved options as JSON and stats as JSONL (the EDM way).

A run folder is `ROOT/00007-KIND-DESC`: the number is one more than the highest already
under ROOT, so folders sort in creation order and never collide.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from diffnas.errors import UserError

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
        except OSError as err:  # a read-only folder or file system, no permission
            raise UserError(
                f"--runs {str(root)!r} cannot hold run folders: {name} cannot be created there "
                f"({err.strerror or err}); give a folder you can write to",
                field="runs",
            ) from None


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """`path` is a folder that exists or can be created, and that can be written in; checked
    before any work, leaving nothing behind. A `UserError` names the option, path and reason."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{option} {str(path)!r} is a file, not a folder; give a folder", field=option[2:]
        )
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # a file on the way also "does not exist" below it
    if not ancestor.is_dir():
        raise UserError(
            f"{option} {str(path)!r}: {str(ancestor)!r} is a file, so no folder can be made "
            "under it; give another folder",
            field=option[2:],
        )
    try:  # what the permission bits cannot tell: a read-only file system, /proc, root's view
        os.rmdir(tempfile.mkdtemp(prefix=".diffnas-probe-", dir=ancestor))
    except OSError as err:
        raise UserError(
            f"{option} {str(path)!r}: nothing can be created in {str(ancestor)!r} "
            f"({err.strerror or err}); give a folder you can write to",
            field=option[2:],
        ) from None
    return path


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A new folder filled under a temporary name next to `out`, renamed to `out` when the block
    ends without error; on an error the partial folder (and any parent created for it) goes,
    so a failed or killed export never leaves a half-written `out` behind. `out` must not exist
    or be an empty folder."""
    top = out.parent
    while not top.parent.exists():
        top = top.parent  # the highest parent this call creates, if any
    created = None if top.exists() else top
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield tmp
        os.replace(tmp, out)  # atomic; replaces an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:60]


def temp_beside(path: str | Path) -> Path:
    """A temporary file name beside `path`, to write and then `os.replace` over it: a kill never
    leaves half a file. The name is this writer's own: two processes writing one file at once
    (four candidates filling a shared cache) each rename their own copy, where a fixed `.tmp`
    name let one rename the file away under the other (FileNotFoundError)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (write to a temp file, then rename) so a kill never leaves half a file."""
    path = Path(path)
    tmp = temp_beside(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    """A JSON file as it is, unchecked: for tests and for files of our own just written.
    Every file a command reads back goes through `read_file`."""
    return json.loads(Path(path).read_text())


def _what_is_wrong(err: ValidationError) -> str:
    """Each failing field of a file as `field=value: rule`, the JSON syntax error as it is."""
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "json_invalid":
            parts.append(f"not valid JSON ({msg})")
        else:
            shown = repr(e.get("input"))
            shown = shown[:60] + "..." if len(shown) > 60 else shown
            parts.append(f"{loc}={shown}: {msg}" if loc else f"it holds {shown}: {msg}")
    more = len(err.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def read_file(
    path: str | Path,
    model: Any,
    what: str,
    *,
    fix: str = "restore it or start a new run",
    strict: bool = True,
) -> Any:
    """A JSON file the tool wrote earlier, read back and validated by `model` (a pydantic model
    or any type pydantic validates, e.g. `list[Entry]`): the one loader of every run-folder file.

    A missing, unreadable, torn or invalid file is a `UserError` naming the file (`what` and
    its path), the field, its value and what is wrong, then `fix`: what the user can do. Strict:
    a field the tool wrote as a number must still be a number (a string "12" is damage).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} does not exist", field=path.name) from None
    except OSError as err:
        raise UserError(
            f"{what} {str(path)!r} cannot be read: {err.strerror or err}", field=path.name
        ) from None
    return _validate(data, model, f"{what} {str(path)!r}", fix, path.name, strict)


def _validate(data: bytes, model: Any, named: str, fix: str, field: str, strict: bool) -> Any:
    try:
        return _adapter(model).validate_json(data, strict=strict)
    except ValidationError as err:
        raise UserError(f"{named} is damaged: {_what_is_wrong(err)}; {fix}", field=field) from None


def _adapter(model: Any) -> TypeAdapter[Any]:
    return model if isinstance(model, TypeAdapter) else TypeAdapter(model)


def read_records(
    path: str | Path,
    model: Any,
    what: str,
    *,
    fix: str = "restore it or start a new run",
    strict: bool = True,
) -> list[Any]:
    """The records of a JSONL file the tool appended to, each validated by `model`.

    A last line without its newline is the torn end of a killed append and is left out; any
    other line that is not a valid record is a `UserError` naming the file and the line.
    A missing file holds no records.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise UserError(
            f"{what} {str(path)!r} cannot be read: {err.strerror or err}", field=path.name
        ) from None
    lines = data.split(b"\n")
    if lines[-1]:
        lines[-1] = b""  # torn by a kill mid-append: that record was never complete
    adapter = _adapter(model)
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        if line.strip():
            named = f"{what} {str(path)!r} line {number}"
            records.append(_validate(line, adapter, named, fix, path.name, strict))
    return records


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
    return read_file(path, model, f"{kind} options")


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
    return [
        _spelling(param)
        for param in ctx.command.params
        if param.name is not None and param.name not in skip and was_given(ctx, param.name)
    ]


def was_given(ctx: Any, name: str) -> bool:
    """Whether parameter `name` was typed on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _spelling(param: Any) -> str:
    """How the user writes a parameter: its long option (`--num`, not `-n`) or ARGUMENT."""
    if not param.opts[0].startswith("-"):
        return param.name.upper()
    return max(param.opts, key=lambda opt: opt.startswith("--"))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record; flushed and fsynced so a killed run keeps every line it wrote.

    A last line left without its newline by a kill mid-append is cut off first, so the new
    record starts a line of its own and the file reads back whole (`read_records`).
    """
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    with open(path, "a+b") as f:
        _cut_torn_tail(f)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _cut_torn_tail(f: Any) -> None:
    end = f.seek(0, os.SEEK_END)
    if end == 0 or os.pread(f.fileno(), 1, end - 1) == b"\n":
        return
    start = end
    while start > 0:  # back to the last newline (records are small; chunks of 64 KB)
        chunk = os.pread(f.fileno(), min(start, 1 << 16), max(start - (1 << 16), 0))
        start -= len(chunk)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start += cut + 1
            break
    f.truncate(start)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records as they are, skipping any line that is not JSON: for tests and for logs shown
    as they are. A command reading records back uses `read_records`."""
    path = Path(path)
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
