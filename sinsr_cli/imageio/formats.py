"""Output formats: the one table of what each can store, and the one rule that picks one.

Every caller that needs "which format does this name mean" or "which format does this output
get" asks here: discovery places outputs with :func:`choose_output_format` (once per input),
the writer and the batch engine look a target's format up by its extension
(:func:`format_of`), option checks ask :func:`format_named`, and both the planner and the
writer ask :func:`size_refusal` whether an output is too large for its format; :data:`FORMAT_NAMES` lists
the names for a front end's help, and :data:`IMAGE_EXTENSIONS` the names that mean "an image".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Format:
    """An output format and what it can store."""

    name: str  # Pillow's name: "PNG", "JPEG", "WEBP", "TIFF"
    extension: str  # the one sinsr writes: ".png", ".jpg", ".webp", ".tif"
    alpha: bool  # can carry an alpha channel
    gray: bool  # can store one-channel (grayscale) pixels
    deep: bool  # can store 16-bit samples
    max_side: int | None = None  # the widest (and tallest) image it can store; None: no limit an output meets


FORMATS = {
    "PNG": Format("PNG", ".png", alpha=True, gray=True, deep=True),
    "JPEG": Format("JPEG", ".jpg", alpha=False, gray=True, deep=False, max_side=65500),  # libjpeg's
    "WEBP": Format("WEBP", ".webp", alpha=True, gray=False, deep=False, max_side=16383),  # 14-bit sides
    "TIFF": Format("TIFF", ".tif", alpha=True, gray=True, deep=True),
}
#: the names (and extensions without the dot) a user may give for a format
_ALIASES = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}
FORMAT_NAMES = tuple(_ALIASES)
#: the output format for an input's content format (Pillow's names); anything else -> PNG
_FOR_CONTENT = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "TIFF": "TIFF"}
_CHOICES = "use png, jpg, webp or tif"
#: extensions that make a file "meant to be an image" (any Pillow reads, not only those sinsr
#: writes): an input named so that cannot be read is an error, not a file to skip
IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .webp .tif .tiff .bmp .gif .ppm .pgm .pbm .pnm .tga .ico "
    ".heic .heif .avif .jp2 .j2k .dds .psd".split()
)


def size_refusal(fmt: Format, width: int, height: int) -> str | None:
    """Why ``fmt`` cannot store a ``width`` x ``height`` image (a side past its ``max_side``), or
    None: asked when outputs are planned, so the refusal comes before the model runs, not from
    the encoder after it."""
    if fmt.max_side is None or max(width, height) <= fmt.max_side:
        return None
    return f"{width}x{height} pixels, and {fmt.name} stores at most {fmt.max_side} pixels a side"


def format_named(name: str) -> Format | None:
    """The format a name or extension means (``"jpeg"``, ``".TIF"``), or None."""
    key = _ALIASES.get(name.lower().lstrip("."))
    return None if key is None else FORMATS[key]


def parse_format(name: str) -> Format:
    """The format a user-given name means; ValueError naming the choices otherwise."""
    fmt = format_named(name)
    if fmt is None:
        raise ValueError(f"unknown output format {name!r}; {_CHOICES}")
    return fmt


def format_of(path: Path) -> Format:
    """The format a file name's extension means; ValueError when it names none."""
    fmt = format_named(path.suffix) if path.suffix else None
    if fmt is None:
        raise ValueError(f"cannot tell the format from {path.suffix!r}; {_CHOICES}")
    return fmt


def choose_output_format(
    requested: str | None, *, output_file: Path | None = None, content: str | None = None
) -> Format:
    """The format of an output, decided once: the requested name, else the extension of an
    output file the user named, else the input's content format (JPEG/MPO -> JPEG, PNG, WebP,
    TIFF), else PNG. ValueError for an unknown name, or a named file whose extension disagrees
    with the requested format."""
    fmt = parse_format(requested) if requested is not None else None
    named = format_named(output_file.suffix) if output_file is not None and output_file.suffix else None
    if fmt is not None and named is not None and named != fmt:
        raise ValueError(f"extension does not match the requested format {requested!r}")
    if fmt is None:
        fmt = named or FORMATS[_FOR_CONTENT.get(content or "", "PNG")]
    return fmt
