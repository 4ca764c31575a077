"""`diffnas` entry point: the typer app, its sub-commands, and the error policy.

Error policy: a `UserError` (bad input) and a usage error (unknown command or option,
missing argument, a value of the wrong type or out of range) print one paragraph to stderr
and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import typer

from diffnas import __version__, progress
from diffnas.cli import (
    compare_cmd,
    cost_cmd,
    doctor_cmd,
    export_cmd,
    proxy_check_cmd,
    report_cmd,
    score_cmd,
    search_cmd,
    space_cmd,
    tabulate_cmd,
    train_cmd,
    worker_cmd,
)
from diffnas.errors import UserError

app = typer.Typer(
    name="diffnas",
    help="Search the architecture of a diffusion model's denoiser (UNet) with an LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(space_cmd.app, name="space")
app.command("cost")(cost_cmd.cost)
app.command("train")(train_cmd.train)
app.command("sample")(score_cmd.sample)
app.command("score")(score_cmd.score)
app.command("search")(search_cmd.search)
app.command("status")(search_cmd.status)
app.command("doctor")(doctor_cmd.doctor)
app.command("proxy-check")(proxy_check_cmd.proxy_check)
app.command("tabulate")(tabulate_cmd.tabulate)
app.command("compare")(compare_cmd.compare)
app.command("report")(report_cmd.report)
app.command("export")(export_cmd.export)
app.command("worker")(worker_cmd.worker)


def _version(value: bool) -> None:
    if value:
        print(f"diffnas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars or progress lines (results still print)."
    ),
) -> None:
    """diffnas: LLM-guided architecture search for diffusion-model denoisers."""
    progress.set_quiet(quiet)


def _click_modules() -> list[ModuleType]:
    """Every click whose exceptions the app can raise.

    Recent typer releases (0.29 here) parse the command line with a vendored copy,
    `typer._click`, whose exceptions are not the `click` package's: catching only
    `click.ClickException` let every usage error escape as a traceback. Older typers use the
    `click` package. Both are taken when present, whichever typer is installed.
    """
    modules = []
    for name in ("typer._click", "click"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    return modules


_CLICKS = _click_modules()


def _exception_classes(name: str, *extra: type) -> tuple[type, ...]:
    """The exception class `name` of every click, plus `extra`.

    typer's vendored click keeps Abort and Exit in `typer.exceptions`, hence the extras.
    """
    found = [cls for m in _CLICKS if (cls := getattr(m.exceptions, name, None))]
    return tuple(dict.fromkeys([*found, *extra]))


USAGE_ERRORS = _exception_classes("UsageError")
CLICK_ERRORS = _exception_classes("ClickException")
NO_ARGS_IS_HELP = _exception_classes("NoArgsIsHelpError")
ABORTS = _exception_classes("Abort", typer.Abort)
EXITS = _exception_classes("Exit", typer.Exit)


def one_paragraph(text: str) -> str:
    """Collapse line breaks (a YAML parser's, click's usage block) into one paragraph."""
    return " ".join(text.split())


def usage_message(err: Exception) -> str:
    """`error: <what was wrong>. Usage: <the command's usage> (see '<command> --help').`"""
    message = one_paragraph(err.format_message()).rstrip(".") + "."  # type: ignore[attr-defined]
    ctx = getattr(err, "ctx", None)
    if ctx is None:
        return f"error: {message}"
    usage = one_paragraph(ctx.get_usage())
    return f"error: {message} {usage} (see '{ctx.command_path} --help')"


def run() -> None:
    """Console-script entry point: bad input is one paragraph on stderr and exit code 2."""
    try:
        result = app(prog_name="diffnas", standalone_mode=False)
    except UserError as err:
        print(f"error: {one_paragraph(str(err))}", file=sys.stderr)
        sys.exit(2)
    except NO_ARGS_IS_HELP as err:
        err.show()  # a bare `diffnas` or `diffnas space`: the help text is the answer
        sys.exit(err.exit_code)
    except USAGE_ERRORS as err:
        print(usage_message(err), file=sys.stderr)
        sys.exit(2)
    except CLICK_ERRORS as err:
        print(f"error: {one_paragraph(err.format_message())}", file=sys.stderr)
        sys.exit(err.exit_code)
    except ABORTS:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except EXITS as exit_:
        sys.exit(exit_.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
