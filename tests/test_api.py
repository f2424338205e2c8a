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


def test_deep_gray_pil_images_are_read_as_the_cli_reads_their_files(tiny_checkpoints, tmp_path, monkeypatch):
    """A 16-bit (I;16), 32-bit (I) or float (F) gray PIL image gives the pixels the CLI gets
    from the same file; ``convert("RGB")`` saturated them to white."""
    import numpy as np

    from sinsr_cli.imageio import pil_rgb, read_image

    g = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    im = Image.open(tmp_path / "g16.png")
    from_file = read_image(tmp_path / "g16.png").rgb
    assert np.allclose(pil_rgb(im), np.broadcast_to(from_file, (12, 16, 3)), atol=1e-6)
    assert np.allclose(pil_rgb(im.convert("I")), pil_rgb(im), atol=1e-6)
    f = Image.fromarray(g.astype(np.float32) / 65535)
    assert np.allclose(pil_rgb(f), pil_rgb(im), atol=1e-6)
    import sinsr_cli.api as api

    seen = []

    class Recording(api.Engine):
        def __call__(self, x, plan, **kw):
            seen.append(x.clone())
            return super().__call__(x, plan, **kw)

    monkeypatch.setattr(api, "Engine", Recording)
    unet, vq = tiny_checkpoints
    out = upscale(im, pipeline=load_pipeline(unet, vq, device="cpu", dtype="fp32"))
    assert out.size == (64, 48) and out.mode == "RGB"
    expect = torch.from_numpy(np.broadcast_to(from_file, (12, 16, 3)).copy()).permute(2, 0, 1)
    torch.testing.assert_close(seen[0][0], expect, atol=1e-6, rtol=0)  # not the white image it was
