"""The `sinsr` command: Typer only (parse -> build -> call -> render)."""

from __future__ import annotations

import warnings

import typer

from .. import __version__
from ..hugepages import enable_huge_pages
from .bench import bench_cmd
from .common import SinsrCommand, SinsrGroup
from .distill import distill_cmd
from .models import convert_cmd, download_cmd, export_cmd, models_cmd
from .upscale import upscale_cmd

app = typer.Typer(
    name="sinsr",
    cls=SinsrGroup,
    help="One-step diffusion image super-resolution (SinSR / ResShift).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sinsr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """One-step diffusion image super-resolution (SinSR / ResShift)."""


app.command("upscale", cls=SinsrCommand)(upscale_cmd)
app.command("bench", cls=SinsrCommand)(bench_cmd)
app.command("distill", cls=SinsrCommand)(distill_cmd)
app.command("models", cls=SinsrCommand)(models_cmd)
app.command("download", cls=SinsrCommand)(download_cmd)
app.command("export", cls=SinsrCommand)(export_cmd)
app.command("convert", cls=SinsrCommand)(convert_cmd)


def main() -> None:
    enable_huge_pages()  # before anything imports torch (hugepages.py says why)
    # Pillow's notes on damaged metadata ("Corrupt EXIF data") are a Python warning with its
    # source line: the file's own one-line error or output says what happened to it
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    app()
