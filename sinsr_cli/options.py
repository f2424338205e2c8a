"""The settings of a folder run (``batch.run_batch``), checked before any model is loaded.

Settings are named in library terms (``tile``, ``max_pixels``); a refused value is a
``SettingError`` naming the setting, and a front end maps the name to its own spelling (the CLI
to a flag). Model settings (steps, sampler, seed, tiling) are checked by ``plan``'s rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelPreset
from .errors import SettingError
from .imageio import DEFAULT_MAX_PIXELS, format_named
from .plan import Plan, Tiling, check_settings, make_plan, resolve_seed

__all__ = ["ALPHA_MODES", "UpscaleOptions", "default_suffix"]

#: how an alpha channel is upscaled (see ``postprocess``)
ALPHA_MODES = ("resize", "model")


def default_suffix(scale: float) -> str:
    """``_x4``, ``_x2``, ``_x1.5``: the file-name suffix used when none is given."""
    return f"_x{scale:g}"


@dataclass(frozen=True)
class UpscaleOptions:
    """Everything ``run_batch`` needs besides the pipeline and the inputs.

    ``tile``: LR pixels, 0 = whole image, None = ``auto`` (planned per image by
    :func:`auto_plan`). ``suffix`` None means :func:`default_suffix`. ``format`` None or
    ``"auto"`` keeps each input's format where sinsr writes it, else PNG (``imageio.choose_output_format``). ``max_pixels`` None disables the decompression-bomb
    check.
    """

    scale: float = 4.0
    steps: int | None = None
    sampler: str | None = None
    seed: int | None = None
    tile: int | None = None  # auto, as the CLI's default --tile
    tile_overlap: int = 32
    tile_pad: int = 8
    tile_batch: int = 1
    alpha: str = "resize"
    output: Path | None = None
    suffix: str | None = None
    format: str | None = None
    quality: int = 95
    strip_metadata: bool = False
    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    fp32_fallback: bool = True
    io_threads: bool = True  # decode the next file and write the last one while the model runs

    def __post_init__(self) -> None:
        """Refuse bad values before any model is loaded; model settings by ``plan``'s rules."""
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise SettingError("scale", f"scale must be a number > 0, got {self.scale!r}")
        check_settings(self.steps, self.sampler)
        self.tiling  # noqa: B018 - Tiling checks tile, tile_overlap, tile_pad and tile_batch
        if self.seed is not None:
            resolve_seed(self.seed)
        if self.alpha not in ALPHA_MODES:
            raise SettingError("alpha", f"alpha must be one of {', '.join(ALPHA_MODES)}, got {self.alpha!r}")
        if isinstance(self.format, str) and self.format.strip().lower() == "auto":
            object.__setattr__(self, "format", None)  # the input's format, as None
        if self.format is not None and format_named(self.format) is None:
            raise SettingError("format", f"format must be png, jpg, webp, tif or auto, got {self.format!r}")
        if self.suffix is not None and any(c in self.suffix for c in ("/", "\\", "\0")):
            raise SettingError("suffix", f"suffix must be part of a file name (no / or \\), got {self.suffix!r}")
        if not 1 <= self.quality <= 100:
            raise SettingError("quality", f"quality must be in 1..100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise SettingError("max_pixels", f"max_pixels must be >= 1 (or None for no limit), got {self.max_pixels}")

    @property
    def tiling(self) -> Tiling:
        """The tile settings as ``plan.Tiling`` (checked on construction)."""
        return Tiling(self.tile, self.tile_overlap, self.tile_pad, self.tile_batch)

    def plan_for(self, preset: ModelPreset, dtype: torch.dtype | None = None) -> Plan:
        """The run's :class:`plan.Plan` for a model: ``plan.make_plan`` of these settings
        (SettingError / OneStepOnly when the model does not take them)."""
        return make_plan(
            preset, steps=self.steps, sampler=self.sampler, seed=self.seed, tiling=self.tiling, dtype=dtype
        )

    @property
    def file_suffix(self) -> str:
        """What goes between an output's stem and extension: a suffix that starts with a letter
        or digit is joined with ``_`` (Real-ESRGAN's ``--suffix out`` -> ``photo_out.png``); one
        that starts otherwise (``_x4``, ``-sr``, ``.up``) is used as given."""
        if self.suffix is None:
            return default_suffix(self.scale)
        return "_" + self.suffix if self.suffix[:1].isalnum() else self.suffix
