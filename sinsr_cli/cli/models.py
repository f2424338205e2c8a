"""`sinsr models`, `sinsr download`, `sinsr export`, `sinsr convert`: the model zoo and checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import EXIT_PARTIAL, console, echo_path, handle_errors, quiet_option, shown


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


@handle_errors
def models_cmd(
    verify: bool = typer.Option(False, "--verify", help="Re-hash every cached model against its recorded sha256 (a bad one is deleted, to be fetched again)."),
    json_out: bool = typer.Option(False, "--json", help="Print the zoo and cache state as JSON on stdout."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """List the model zoo: which models are cached, their size and where they live.

    A cached model is re-hashed when its size, mtime or inode change; --verify re-hashes them all now.
    """
    from ..hub import cache_root, cached_status, verify_cache

    checked = {r["name"]: r for r in verify_cache()} if verify else {}
    rows = cached_status()
    folder = cache_root() / "models"
    corrupt = [n for n, r in checked.items() if r["status"] == "corrupt"]
    if json_out:
        keep = ("name", "kind", "cached", "size", "path", "licence", "description", "url", "hub")
        models = [{k: r[k] for k in keep} for r in rows]
        if verify:
            for m in models:
                m["verified"] = {"ok": True, "corrupt": False}.get(checked[m["name"]]["status"])
        typer.echo(json.dumps({"cache": str(folder), "models": models}, indent=2))
        if corrupt:
            raise typer.Exit(EXIT_PARTIAL)
        return
    for name in corrupt:
        console.print(
            f"[red]error:[/red] {name}: the cached file failed sha256 verification and was deleted; "
            f"`sinsr download {name}` fetches it again", soft_wrap=True, highlight=False,
        )
    table = Table(title="sinsr model zoo", title_justify="left")
    for col in ("name", "kind", "cached", "size", "licence", "description"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for row in rows:
        table.add_row(
            row["name"], row["kind"], "yes" if row["cached"] else "no", _size(row["size"]), row["licence"],
            row["description"],
        )
    Console().print(table)
    console.print(f"cache: {shown(folder)} (set SINSR_CACHE to move it)", soft_wrap=True, highlight=False)
    if verify:
        ok = sum(r["status"] == "ok" for r in checked.values())
        console.print(f"verified {ok + len(corrupt)} cached model(s): {ok} ok, {len(corrupt)} corrupt")
    console.print("Weights are the authors' and are licensed for non-commercial use only.")
    if corrupt:
        raise typer.Exit(EXIT_PARTIAL)


@handle_errors
def download_cmd(
    names: list[str] = typer.Argument(..., help="Zoo names, e.g. sinsr-v1 vq-f4."),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Download (and convert to safetensors) zoo models ahead of time."""
    from ..hub import download

    for name in names:
        path = download(name, force=force)
        if not quiet:
            echo_path(path, prefix=f"{name}: ")


@handle_errors
def export_cmd(
    folder: Path = typer.Argument(..., help="Folder to write the mirror into (created if needed)."),
    names: Optional[list[str]] = typer.Argument(None, help="Zoo names to include. Default: every model."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export in FOLDER (its model files this export leaves out are removed)."),
    offline: bool = typer.Option(False, "--offline", help="Never download: every model exported must be cached already."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Write an upload-ready Hub mirror: the converted weights, a model card and SHA256SUMS.

    Upload the folder as a Hugging Face model repo (e.g. `hf upload USER/REPO FOLDER .`) and set SINSR_HUB_REPO=USER/REPO: sinsr then fetches from the mirror before the GitHub releases.
    """
    from ..mirror import export_mirror

    def warn(message: str) -> None:
        if not quiet:
            console.print(f"[yellow]warning:[/yellow] {shown(message)}", soft_wrap=True, highlight=False)

    paths = export_mirror(folder, names or None, force=force, offline=offline or None, warn=warn)
    if quiet:
        return
    for path in paths:
        echo_path(path)
    console.print(f"mirror ready: upload {shown(folder)} as a model repo and set SINSR_HUB_REPO to it", soft_wrap=True, highlight=False)


@handle_errors
def convert_cmd(
    src: Path = typer.Argument(..., help="Checkpoint to convert (.pth, .pt, .ckpt or .safetensors)."),
    dst: Path = typer.Argument(..., help="Output .safetensors file."),
    config: Optional[Path] = typer.Option(None, "--config", help="Official YAML/JSON with model.params, autoencoder.params and/or diffusion.params, for non-preset architectures."),
    force: bool = typer.Option(False, "--force", help="Overwrite DST if it exists."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Convert an official checkpoint to a self-describing safetensors file."""
    from ..files import unwritable_reason
    from ..models.convert import convert_checkpoint

    if dst.suffix != ".safetensors":
        raise ValueError(f"{dst}: the output must end in .safetensors")
    reason = unwritable_reason(dst)
    if reason:
        raise ValueError(f"{dst}: {reason}")
    if dst.exists() and not force:
        raise ValueError(f"{dst}: already exists (use --force to overwrite)")
    if src.resolve() == dst.resolve():
        raise ValueError("source and destination are the same file")
    out = convert_checkpoint(src, dst, config=config)
    if not quiet:
        typer.echo(f"wrote {out}")
