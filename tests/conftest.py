"""Shared test fixtures: paths to ../shared, tiny models, tiny checkpoints."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
import torch

from sinsr_cli import zoo as zoo_module
from sinsr_cli.config import PRESETS, VQ_PRESETS, tiny_preset, tiny_unet, tiny_vq
from sinsr_cli.models.checkpoints import unet_metadata, vq_metadata, write_safetensors
from sinsr_cli.models.swin_unet import SwinUNet
from sinsr_cli.models.vq_f4 import VQModel
from sinsr_cli.pipeline import SRPipeline

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SINSR_SHARED", ROOT.parent / "shared"))
DATA = Path(os.environ.get("SINSR_DATA", SHARED / "data"))
REFERENCE = SHARED / "reference"

torch.set_num_threads(min(2, os.cpu_count() or 1))
# `--dtype auto` picks bf16 on CPUs with native bf16: pin fp32 so results do not depend on the host
# (subprocesses inherit it; tests of the detection itself clear it).
os.environ["SINSR_CPU_BF16"] = "0"


def need(path: Path) -> Path:
    """Skip cleanly when a shared file/folder is absent (e.g. a clone without ../shared)."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def tiny_zoo(monkeypatch: pytest.MonkeyPatch, zoo: tuple[zoo_module.ZooEntry, ...] | None = None) -> None:
    """Make the zoo (``zoo``, else the real one) a zoo of tiny models: each entry's preset becomes
    ``<preset>-tiny``, registered with the same schedule and ``tiny_unet`` / ``tiny_vq``, so the
    cache takes tiny files under the zoo names (and, as for the real ones, nothing else)."""
    entries = []
    for e in zoo_module.ZOO if zoo is None else zoo:
        name = f"{e.preset}-tiny"
        if e.kind == "unet":
            monkeypatch.setitem(PRESETS, name, dataclasses.replace(PRESETS[e.preset], name=name, unet=tiny_unet()))
        else:
            monkeypatch.setitem(VQ_PRESETS, name, tiny_vq())
        entries.append(dataclasses.replace(e, preset=name))
    monkeypatch.setattr(zoo_module, "ZOO", tuple(entries))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return need(DATA)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return need(REFERENCE)


def make_tiny_models(seed: int = 0) -> tuple[SwinUNet, VQModel]:
    """Tiny random models whose outputs stay in a sane range (small last layer)."""
    torch.manual_seed(seed)
    unet, vq = SwinUNet(tiny_preset().unet), VQModel(tiny_vq())
    with torch.no_grad():
        unet.out[2].weight.mul_(0.1)
        vq.quantize.embedding.weight.normal_(0, 0.5)
    return unet, vq


@pytest.fixture
def tiny_pipeline() -> SRPipeline:
    unet, vq = make_tiny_models()
    return SRPipeline(unet, vq, tiny_preset())


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(unet.safetensors, vq.safetensors) with self-describing metadata."""
    d = tmp_path_factory.mktemp("ckpt")
    unet, vq = make_tiny_models()
    u = write_safetensors(unet.state_dict(), d / "tiny_unet.safetensors", unet_metadata(tiny_preset()))
    v = write_safetensors(vq.state_dict(), d / "tiny_vq.safetensors", vq_metadata(tiny_vq()))
    return u, v


@pytest.fixture
def one_thread():
    """Tiny models are per-op-overhead bound: one thread is faster and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def disk_full_once(monkeypatch) -> list[int]:
    """The first image encode writes partial bytes then fails with ENOSPC; later ones succeed.

    Returns the list of encode calls (one entry per call)."""
    from sinsr_cli.imageio import write as imageio_write

    real = imageio_write._encode_pillow
    calls: list[int] = []

    def encode(f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            f.write(b"\x89PNG partial data")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, *args, **kwargs)

    monkeypatch.setattr(imageio_write, "_encode_pillow", encode)
    return calls


@pytest.fixture
def opens(monkeypatch):
    """Count opens of files by name; returns ``count(path) -> int``.

    Catches ``builtins.open``/``io.open`` (what sinsr and Pillow's ``Image.open(path)`` call) and
    ``os.open`` (atomic writes), on every thread, for the rest of the test."""
    import builtins
    import io

    seen: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    def counting_os_open(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)):
            seen.append(os.path.realpath(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    return lambda path: seen.count(os.path.realpath(path))
