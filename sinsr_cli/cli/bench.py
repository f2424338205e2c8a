"""`sinsr bench` (being written)."""

from __future__ import annotations

import typer


def bench_cmd() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
