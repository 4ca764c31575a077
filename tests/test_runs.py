"""Run folders: `load_options`, the one way every --resume and `status` read options.json."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from diffnas.errors import UserError
from diffnas.runs import OPTIONS_FILE, load_options, write_json


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int


def test_load_options_round_trip(tmp_path: Path) -> None:
    write_json(tmp_path / OPTIONS_FILE, {"seed": 7})
    assert load_options(tmp_path, _Options, kind="train") == _Options(seed=7)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, ["--resume", "no options.json there", "train run folder"]),
        (b"{not json", ["options.json", "not valid JSON", "damaged"]),
        (b"\xff\xfe\x00", ["options.json", "not valid JSON"]),  # not UTF-8: no decode crash
        (b'{"seed": "x", "more": 1}', ["options.json", "seed='x'", "more=1"]),
    ],
)
def test_load_options_refuses_with_the_file_named(
    tmp_path: Path, content: bytes | None, expected: list[str]
) -> None:
    if content is not None:
        (tmp_path / OPTIONS_FILE).write_bytes(content)
    with pytest.raises(UserError) as info:
        load_options(tmp_path, _Options, kind="train")
    for text in expected:
        assert text in str(info.value)


def test_concurrent_writers_of_one_file_never_rename_each_others_temp_file(tmp_path) -> None:
    """Four candidates filling one cache write the same file at once: each write must land
    whole (with a shared `.tmp` name one writer renamed the file away under another)."""
    import threading

    from diffnas.runs import read_json

    target, errors = tmp_path / "shared.json", []

    def writer(k: int) -> None:
        try:
            for i in range(200):
                write_json(target, {"writer": k, "i": i, "pad": "x" * 2000})
        except OSError as err:  # FileNotFoundError when a temp file is taken from under us
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(read_json(target)) == {"writer", "i", "pad"}  # one whole write, the last
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]  # no temp file left
