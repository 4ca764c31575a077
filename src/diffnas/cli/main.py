"""`diffnas` entry point: the typer app, its sub-commands, and the error policy.

Error policy: a `UserError` (bad input) prints one paragraph to stderr and exits 2; a
usage error (unknown option, missing argument) exits 2 as click does; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from diffnas import __version__
from diffnas.cli import cost_cmd, doctor_cmd, score_cmd, search_cmd, space_cmd, train_cmd
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


def _version(value: bool) -> None:
    if value:
        print(f"diffnas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """diffnas: LLM-guided architecture search for diffusion-model denoisers."""


def run() -> None:
    """Console-script entry point."""
    try:
        result = app(standalone_mode=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
