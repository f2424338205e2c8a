"""`sinsr upscale` (being written)."""

from __future__ import annotations

import typer


def upscale_cmd() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
