"""`diffnas` starts without torch: the command modules import the layers that need torch,
diffusers, torch-fidelity, Ray or matplotlib inside their commands (cli/__init__.py), so
`--help`, `space list` and an option refused by its type or range cost a fraction of a second
instead of the ~5 s those imports take, in every console-script process of a user and of
this suite."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "diffusers", "torch_fidelity", "torchvision", "ray", "matplotlib", "llama_cpp")


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = f"import sys, diffnas.cli.main; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# Each command line runs through the console script's own function in one fresh process;
# after each, the heavy libraries loaded so far are recorded (a later case cannot hide an
# earlier one's import: none may appear at all).
CASES = {
    "help": (["--help"], 0),
    "version": (["--version"], 0),
    "space-list": (["space", "list"], 0),
    "search-help": (["search", "--help"], 0),
    "unknown-option": (["search", "--budget-gmacs", "-1"], 2),
    "not-an-int": (["search", "--rounds", "abc"], 2),
    "out-of-range": (["train", "tiny-digits", "--steps", "0"], 2),
    "latency-option-without-latency": (["cost", "--batch", "4"], 2),
    "unknown-command": (["nosuchcmd"], 2),
}
RUNNER = """
import contextlib, io, json, sys
from diffnas.cli.main import run
heavy, found = {heavy!r}, {{}}
for name, args in {cases!r}.items():
    sys.argv = ["diffnas", *args]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            run()
        except SystemExit as exit_:
            code = exit_.code
    found[name] = [code, sorted(m for m in heavy if m in sys.modules)]
print(json.dumps(found))
"""


def test_help_listing_and_refused_options_stay_torch_free() -> None:
    script = RUNNER.format(heavy=HEAVY, cases={k: args for k, (args, _) in CASES.items()})
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found == {name: [code, []] for name, (_, code) in CASES.items()}
