"""The run plan: every decision about how to run the model, made and checked in one place.

A :class:`Plan` (frozen) carries the resolved step count, sampler, seed, tile geometry and
dtype from where a run is set up (the CLI, ``sinsr_cli.upscale``, the bench runner) to where
they are used (``engine.Engine``, ``SRPipeline``). :func:`make_plan` is the one place that
checks them and :func:`resolve_seed` the one place a seed is made; nothing below re-checks.

Errors are :class:`errors.SettingError` naming the library setting (``steps``, ``sampler``,
``seed``, ``tile``, ``tile_overlap``, ``tile_pad``, ``tile_batch``); the CLI maps those names to
its flags. :func:`check_settings` is the half that needs no model, so a command can refuse bad
values before it loads (or downloads) weights.
"""

from __future__ import annotations

import numbers
import secrets
from dataclasses import dataclass, field

import torch

from .config import DEFAULT_SEED, ModelPreset
from .devices import as_dtype
from .diffusion.sampler import ONE_STEP, SAMPLERS
from .errors import SettingError

#: the seed value that asks for a fresh one (reported with the run, so it can be repeated)
RANDOM_SEED = "random"
#: the smallest fixed tile: below it context and padding are most of every model call
MIN_TILE = 16

__all__ = [
    "MIN_TILE",
    "OneStepOnly",
    "Plan",
    "SettingError",
    "RANDOM_SEED",
    "Tiling",
    "check_settings",
    "make_plan",
    "resolve_seed",
    "resolve_sampling",
    "sampler_name",
]


class OneStepOnly(SettingError):
    """A one-step student was asked for another step count or sampler."""


@dataclass(frozen=True)
class Tiling:
    """How an image is cut for the model, in LR pixels.

    ``tile``: the tile side; 0 = the whole image; None = ``auto`` (the engine plans each image
    with ``tileplan``, choosing its own overlap and context). ``overlap``: the least overlap of
    neighbouring tiles (blended). ``pad``: the least context a tile sees beyond its edges.
    ``batch``: tiles per model call. Checked on construction.
    """

    tile: int | None = 0
    overlap: int = 32
    pad: int = 8
    batch: int = 1

    def __post_init__(self) -> None:
        if self.tile is not None:
            _integer("tile", self.tile)
            if self.tile < 0:
                raise SettingError("tile", f"tile must be >= 0, got {self.tile}")
            if 0 < self.tile < MIN_TILE:
                raise SettingError(
                    "tile", f"tile {self.tile} is too small; use at least {MIN_TILE} (or 0 to disable tiling)"
                )
        for name, value in (("tile_overlap", self.overlap), ("tile_pad", self.pad)):
            _integer(name, value)
            if value < 0:
                raise SettingError(name, f"{name} must be >= 0, got {value}")
        _integer("tile_batch", self.batch)
        if self.batch < 1:
            raise SettingError("tile_batch", f"tile_batch must be >= 1, got {self.batch}")

    @property
    def auto(self) -> bool:
        return self.tile is None


@dataclass(frozen=True)
class Plan:
    """A run's resolved decisions. Build with :func:`make_plan`, never by hand.

    ``steps`` is the number of denoiser calls (1 for ``onestep``); ``sampler`` a key of
    ``diffusion.sampler.SAMPLERS``; ``seed`` starts every try's generator (a retried image
    draws the same noise as a fresh run); ``dtype`` None means the pipeline's own.
    """

    steps: int
    sampler: str
    seed: int
    tiling: Tiling = field(default_factory=Tiling)
    dtype: torch.dtype | None = None


def _integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(name, f"{name} must be an integer, got {value!r}")


def resolve_seed(value: int | str | None) -> int:
    """The one place a seed is made: None -> ``DEFAULT_SEED`` (identical reruns), ``"random"``
    -> a fresh 31-bit seed (report it to reproduce the run), else the integer given (any
    ``numbers.Integral``, so numpy integers too; a decimal string is read as one).
    SettingError("seed") otherwise."""
    if value is None:
        return DEFAULT_SEED
    if isinstance(value, str):
        text = value.strip().lower()
        if text == RANDOM_SEED:
            return secrets.randbits(31)
        try:
            value = int(text)
        except ValueError:
            raise SettingError("seed", f"seed must be an integer or {RANDOM_SEED!r}, got {value!r}") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy.int64 and friends
    _integer("seed", value)
    if not 0 <= int(value) < 2**63:
        raise SettingError("seed", f"seed must be in 0..2^63-1, got {value}")
    return int(value)


def sampler_name(sampler: str | None) -> str | None:
    """``sampler`` as a key of ``SAMPLERS`` (names are case-insensitive); SettingError listing
    every key otherwise."""
    if sampler is None:
        return None
    key = sampler.strip().lower() if isinstance(sampler, str) else sampler
    if not isinstance(key, str) or key not in SAMPLERS:
        raise SettingError("sampler", f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return key


def check_settings(steps: int | None = None, sampler: str | None = None) -> None:
    """The checks that need no model: ``steps`` >= 1, ``sampler`` a known name."""
    if steps is not None:
        _integer("steps", steps)
        if steps < 1:
            raise SettingError("steps", f"steps must be >= 1, got {steps}")
    sampler_name(sampler)


def resolve_sampling(preset: ModelPreset, steps: int | None = None, sampler: str | None = None) -> tuple[int, str]:
    """``(steps, sampler)`` for ``preset``: steps=1 -> ``onestep``; else the named sampler or the
    preset's default, at ``steps`` or the preset's default count (at most the schedule's T).

    A one-step student (``preset.one_step``) takes exactly one step: any other step count or
    sampler is :class:`OneStepOnly` (its t = 0 output is the learned inversion, roughly x_T).
    """
    check_settings(steps, sampler)
    sampler = sampler_name(sampler)
    if preset.one_step:
        if steps not in (None, 1):
            raise OneStepOnly("steps", f"{preset.name} is a one-step student: it takes exactly 1 step, not {steps}")
        if sampler not in (None, ONE_STEP):
            raise OneStepOnly(
                "sampler", f"{preset.name} is a one-step student: it has no {sampler!r} sampler (one step only)"
            )
        return 1, ONE_STEP
    if steps == 1:
        return 1, ONE_STEP
    if sampler == ONE_STEP and steps is not None:
        raise SettingError("sampler", f"sampler {ONE_STEP!r} takes exactly one step, not {steps}")
    if sampler is None:
        default = preset.default_sampler
        sampler = default if steps is None or default != ONE_STEP else "ancestral"
    if sampler == ONE_STEP:
        return 1, ONE_STEP
    n = steps if steps is not None else preset.default_steps
    if n > preset.schedule.steps:
        raise SettingError("steps", f"steps must be in 1..{preset.schedule.steps} for {preset.name}, got {n}")
    return n, sampler


def make_plan(
    preset: ModelPreset,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | str | None = None,
    tiling: Tiling | None = None,
    dtype: torch.dtype | str | None = None,
) -> Plan:
    """Check and resolve everything a run of ``preset`` needs; see :class:`Plan`. ``dtype``: a
    torch dtype or a name of one (``devices.as_dtype``), None for the pipeline's own."""
    n, name = resolve_sampling(preset, steps, sampler)
    dt = None if dtype is None else as_dtype(dtype)
    return Plan(steps=n, sampler=name, seed=resolve_seed(seed), tiling=tiling or Tiling(), dtype=dt)
