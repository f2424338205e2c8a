"""An official-code parity fixture as data: ``NAME.safetensors`` (weights under ``unet.*`` /
``vq.*``, inputs, outputs), its sidecar ``NAME.json`` (the official constructor params, which
call made each tensor) and ``NAME_conditioning.json`` (the reference's own thread drift).

Reading checks the files before anything runs, so ``parity`` can tell a wrong file (one line,
exit 2) from a parity failure (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .config import ScheduleConfig, UNetConfig, VQConfig
from .errors import one_line

__all__ = ["FixtureError", "fixture_configs", "load_conditioning", "load_fixture"]


class FixtureError(ValueError):
    """A file that is not a runnable parity fixture; the message names the file and what is wrong."""


def load_fixture(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The fixture's tensors and its sidecar, checked first: a wrong file is one line
    (:class:`FixtureError`), kept apart from a parity failure (exit 1)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    side = path.with_suffix(".json")
    if path.suffix.lower() == ".json":
        raise FixtureError(f"{path}: this is a fixture's JSON sidecar; pass the tensors beside it, {path.stem}.safetensors")
    if not path.is_file():
        raise FixtureError(f"{path}: {'is not a file' if path.exists() else 'fixture not found'}")
    if not side.is_file():
        raise FixtureError(f"{side}: sidecar JSON not found next to the fixture")
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise FixtureError(f"{side}: sidecar is not readable JSON ({one_line(e, 160)})") from None
    if not isinstance(meta, dict):
        raise FixtureError(f"{side}: sidecar is a JSON {type(meta).__name__}, not an object")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FixtureError(f"{path}: not a safetensors file ({one_line(e, 160)})") from None
    groups = {k.split(".", 1)[0] for k in tensors if "." in k}
    if "unet" not in groups and groups & {"student", "teacher"}:
        raise FixtureError(
            f"{path}: a distillation fixture (student.*, teacher.*), not an inference parity fixture; "
            "tests/test_distill.py checks it"
        )
    if "vq" not in groups:
        raise FixtureError(f"{path}: no vq.* weights, so not a parity fixture")
    if "unet_params" in meta and "unet" not in groups:
        raise FixtureError(f"{path}: its sidecar has unet_params but it holds no unet.* weights")
    for key in ("vq_params", "diffusion_params", *(("unet_params",) if "unet_params" in meta else ())):
        if not isinstance(meta.get(key), dict):
            raise FixtureError(f"{side}: no {key!r} object (the official constructor params)")
    return tensors, meta


def fixture_configs(meta: dict[str, Any], side: Path) -> tuple[VQConfig, ScheduleConfig, UNetConfig | None]:
    """The sidecar's official params as our configs; a bad value is a :class:`FixtureError`."""
    key = "vq_params"
    try:
        vq = VQConfig.from_official(meta[key])
        key = "diffusion_params"
        sched = ScheduleConfig.from_official(meta[key])
        key = "unet_params"
        unet = UNetConfig.from_official(meta[key]) if key in meta else None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else one_line(e, 160)
        raise FixtureError(f"{side}: {key} does not describe the model ({what})") from None
    return vq, sched, unet


def load_conditioning(fixture: Path) -> dict[str, float] | None:
    """The reference's own 1-vs-2-thread drift per tensor (``NAME_conditioning.json``), or None.

    Only the file named after this fixture counts: another config's drift says nothing here.
    """
    cond = fixture.parent / f"{fixture.stem}_conditioning.json"
    if not cond.is_file():
        return None
    try:
        data = json.loads(cond.read_text()).get("results", {})
        entry = data.get(fixture.stem) or (next(iter(data.values())) if len(data) == 1 else None)
        return None if entry is None else {k: float(v) for k, v in entry.get("key_outputs_max_abs_diff", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise FixtureError(f"{cond}: not a conditioning file (results.<fixture>.key_outputs_max_abs_diff): {one_line(e, 120)}") from None
