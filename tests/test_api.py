"""The one-call Python API on a tiny checkpoint."""

from __future__ import annotations

import torch
from PIL import Image

import sinsr_cli
from sinsr_cli import load_pipeline, upscale


def test_upscale_pil_and_tensor(tiny_checkpoints):
    unet, vq = tiny_checkpoints
    pipe = load_pipeline(unet, vq, device="cpu", dtype="fp32")
    img = Image.new("RGB", (13, 9), (200, 30, 60))
    out = upscale(img, pipeline=pipe)
    assert isinstance(out, Image.Image) and out.size == (52, 36) and out.mode == "RGB"
    t = upscale(torch.rand(3, 8, 12), pipeline=pipe)
    assert t.shape == (3, 32, 48)
    assert sinsr_cli.__version__


def test_upscale_plans_tiles_as_the_cli_by_default(tiny_checkpoints, monkeypatch):
    """The one-call API defaults to ``--tile auto`` (the CLI's default), not to the whole image."""
    import sinsr_cli.engine as engine

    planned = []
    real = engine.auto_plan

    def recording(pipe, height, width, **kw):
        planned.append((height, width))
        return real(pipe, height, width, **kw)

    monkeypatch.setattr(engine, "auto_plan", recording)
    unet, vq = tiny_checkpoints
    pipe = load_pipeline(unet, vq, device="cpu", dtype="fp32")
    x = torch.rand(3, 10, 14)
    auto = upscale(x, pipeline=pipe)
    assert planned == [(10, 14)]
    whole = upscale(x, pipeline=pipe, tile=0)
    assert planned == [(10, 14)]  # tile=0 runs the image whole without planning
    torch.testing.assert_close(auto, whole)  # so small an image is planned untiled
