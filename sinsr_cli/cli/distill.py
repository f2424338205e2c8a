"""`sinsr distill` (being written)."""

from __future__ import annotations

import typer


def distill_cmd() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
