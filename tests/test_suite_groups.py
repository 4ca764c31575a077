"""The suite's own scheduling: `make test` keeps a file whose tests share a fixture in one
process (tests/conftest.py marks it with `xdist_group`). Twice this silently stopped working
- pytest-xdist read the marks before the conftest set them, and pytest 9.2 drops the group
suffix xdist relies on (pytest-dev/pytest-xdist#1386) - and every shared fixture was built
once per process; nothing failed, the suite only got slower. This runs the real conftest on
two small files under `-n 2 --dist loadgroup` and checks each file ran in one process."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

SHARING_FILE = """
import os

import pytest


@pytest.fixture(scope="module")
def built():
    return os.getpid()


@pytest.mark.parametrize("i", range(6))
def test_uses_the_shared_fixture(built, i):
    with open(os.environ["GROUP_PIDS"], "a") as out:
        out.write(f"{__name__} {os.getpid()} {built}\\n")
"""


def test_a_file_that_shares_a_fixture_runs_in_one_process(tmp_path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    for name in ("test_first.py", "test_second.py"):
        (tmp_path / name).write_text(SHARING_FILE)
    pids = tmp_path / "pids.txt"
    # a pytest of its own, not a worker of the pytest-xdist this test may be running under
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
         "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**env, "GROUP_PIDS": str(pids)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    runs = collections.defaultdict(set)
    for line in pids.read_text().splitlines():
        module, pid, built = line.split()
        assert pid == built  # the fixture was built in the process that used it
        runs[module].add(pid)
    assert {m: len(p) for m, p in runs.items()} == {"test_first": 1, "test_second": 1}
