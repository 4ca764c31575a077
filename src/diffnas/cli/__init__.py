"""The `diffnas` command line: `main` holds the typer app, each `*_cmd` module one command.

A command module parses its options and calls its layer. It imports the layers that need
torch, diffusers, torch-fidelity, Ray or matplotlib inside the command, not at the top: every
`diffnas` process imports all the command modules, and `diffnas --help`, `space list` or an
option refused by its type or range should not pay seconds for a torch they never use
(tests/test_cli_import.py). Option declarations stay at the top with the cheap modules they
need (limits, layout, the space's presets).
"""
