"""Output formats: the names a user may give, their extensions, the default for each content."""

from __future__ import annotations

from pathlib import Path

from .errors import ImageWriteError

FORMAT_ALIASES = {
    "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"
}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
OUTPUT_FOR_CONTENT = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "TIFF": "TIFF"}


def output_format(p: Path, format: str | None) -> str:  # noqa: A002
    name = format if format is not None else p.suffix
    key = name.lower().lstrip(".")
    if key not in FORMAT_ALIASES:
        what = (
            f"unknown output format {format!r}"
            if format is not None
            else f"cannot tell the format from {p.suffix!r}"
        )
        raise ImageWriteError(p, f"{what}; use png, jpg, webp or tif")
    return FORMAT_ALIASES[key]
