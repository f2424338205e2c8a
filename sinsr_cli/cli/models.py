"""`sinsr models`, `sinsr download`, `sinsr convert`: the model zoo and checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import console, handle_errors


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


@handle_errors
def models_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the zoo and cache state as JSON on stdout."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """List the model zoo: which models are cached, their size and where they live."""
    from ..hub import cache_root, cached_status

    rows = cached_status()
    folder = cache_root() / "models"
    if json_out:
        keep = ("name", "kind", "cached", "size", "path", "licence", "description", "url", "hub")
        doc = {"cache": str(folder), "models": [{k: r[k] for k in keep} for r in rows]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title="sinsr model zoo", title_justify="left")
    for col in ("name", "kind", "cached", "size", "licence", "description"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for row in rows:
        table.add_row(
            row["name"], row["kind"], "yes" if row["cached"] else "no", _size(row["size"]), row["licence"],
            row["description"],
        )
    Console().print(table)
    console.print(f"cache: {folder} (set SINSR_CACHE to move it)", soft_wrap=True, highlight=False)
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
