from __future__ import annotations

from diffnas.cli.main import run

run()
