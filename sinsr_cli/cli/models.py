"""`sinsr models`, `sinsr download`, `sinsr convert`: the model zoo and checkpoint files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import console, handle_errors


@handle_errors
def models_cmd(verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors.")) -> None:
    """List the model zoo and which models are cached locally."""
    from ..hub import cached_status

    table = Table(title="sinsr model zoo")
    for col in ("name", "kind", "preset", "cached", "licence", "description"):
        table.add_column(col)
    for row in cached_status():
        table.add_row(
            row["name"], row["kind"], row["preset"], "yes" if row["cached"] else "no", row["licence"], row["description"]
        )
    Console().print(table)
    console.print("Weights are the authors' and are licensed for non-commercial use only.")


@handle_errors
def download_cmd(
    names: list[str] = typer.Argument(..., help="Zoo names, e.g. sinsr-v1 vq-f4."),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Download (and convert to safetensors) zoo models ahead of time."""
    from ..hub import download

    for name in names:
        path = download(name, force=force)
        typer.echo(f"{name}: {path}")


@handle_errors
def convert_cmd(
    src: Path = typer.Argument(..., help="Checkpoint to convert (.pth, .pt, .ckpt or .safetensors)."),
    dst: Path = typer.Argument(..., help="Output .safetensors file."),
    config: Optional[Path] = typer.Option(None, "--config", help="Official YAML/JSON with model.params or autoencoder.params, for non-preset architectures."),
    force: bool = typer.Option(False, "--force", help="Overwrite DST if it exists."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Convert an official checkpoint to a self-describing safetensors file."""
    from ..models.checkpoints import convert_checkpoint

    if dst.suffix != ".safetensors":
        raise ValueError(f"{dst}: the output must end in .safetensors")
    if dst.exists() and not force:
        raise ValueError(f"{dst}: already exists (use --force to overwrite)")
    if src.resolve() == dst.resolve():
        raise ValueError("source and destination are the same file")
    out = convert_checkpoint(src, dst, config=config)
    typer.echo(f"wrote {out}")
