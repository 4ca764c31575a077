"""The `diffnas` command line (typer + rich)."""
