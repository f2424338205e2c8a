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
