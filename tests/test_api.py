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


def _pipe(tiny_checkpoints):
    unet, vq = tiny_checkpoints
    return load_pipeline(unet, vq, device="cpu", dtype="fp32")


def test_outputs_are_ordinary_tensors(tiny_checkpoints):
    """``read_image``-style follow-up code works: in-place ops, item assignment, autograd."""
    pipe = _pipe(tiny_checkpoints)
    x = torch.rand(3, 8, 12)
    for y in (upscale(x, pipeline=pipe), pipe(x[None])):
        assert not y.is_inference()
        ref = y.clone()
        y.mul_(255)
        y[(0,) * y.ndim] = 1.0  # item assignment
        expect = ref * 255
        expect[(0,) * y.ndim] = 1.0
        torch.testing.assert_close(y, expect)
        w = torch.ones(1, requires_grad=True)
        (y * w).sum().backward()
        assert w.grad is not None


def test_integer_nan_and_out_of_range_inputs(tiny_checkpoints):
    import pytest

    pipe = _pipe(tiny_checkpoints)
    q = (torch.rand(3, 8, 12) * 255).to(torch.uint8)  # what torchvision.io.read_image gives
    for bad in (q, q.long(), q.bool(), q.to(torch.complex64)):
        with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
            upscale(bad, pipeline=pipe)
    with pytest.raises(ValueError, match="NaN/Inf"):
        upscale(torch.full((1, 3, 8, 8), float("nan")), pipeline=pipe)
    with pytest.raises(ValueError, match="batch is empty"):
        upscale(torch.rand(0, 3, 16, 16), pipeline=pipe)
    x = torch.rand(1, 3, 8, 12) * 1.5 - 0.2
    assert torch.equal(pipe(x), pipe(x.clamp(0, 1)))
    assert torch.equal(upscale(x, pipeline=pipe), upscale(x.clamp(0, 1), pipeline=pipe))


def test_wrong_argument_types_say_what_is_accepted(tiny_checkpoints):
    import numpy as np
    import pytest

    pipe = _pipe(tiny_checkpoints)
    x = torch.rand(3, 8, 12)
    for bad in (None, "x.png", [x]):
        with pytest.raises(TypeError, match="PIL image or a float tensor"):
            upscale(bad, pipeline=pipe)
    with pytest.raises(TypeError, match=r"torch.from_numpy\(a\).permute\(2, 0, 1\)"):
        upscale(np.zeros((8, 12, 3), np.uint8), pipeline=pipe)
    with pytest.raises(TypeError, match="pipeline must be an SRPipeline"):
        upscale(x, pipeline="sinsr-v1")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        pipe(x[None], generator=5)
    for kw in ({"model": "nonexistent"}, {"vq": "x.safetensors"}, {"device": "cuda"}, {"dtype": "fp16"}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} apply only when upscale loads the pipeline"):
            upscale(x, pipeline=pipe, **kw)
    torch.testing.assert_close(upscale(x, pipeline=pipe, seed=np.int64(3)), upscale(x, pipeline=pipe, seed=3))
    unet, vq = tiny_checkpoints
    with pytest.raises(TypeError, match="dtype must be a torch.dtype or a name"):
        load_pipeline(unet, vq, device="cpu", dtype=32)
    with pytest.raises(TypeError, match="model must be a zoo name or a checkpoint path"):
        load_pipeline(None, vq, device="cpu")


def test_a_pil_images_exif_orientation_is_applied_as_the_cli_does(tiny_checkpoints, tmp_path):
    """Orientation 6 (rotate 90 degrees clockwise): 24x20 stored, 20x24 shown; ``upscale`` gives
    the upright 80x96 image, as ``read_image`` (the CLI's reader) gives the upright pixels."""
    import numpy as np

    from sinsr_cli.imageio import pil_rgb, read_image

    a = np.zeros((20, 24, 3), np.uint8)
    a[:, :12] = 255  # left half white as stored: the top half once upright
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.png", exif=ex.tobytes())
    im = Image.open(tmp_path / "rot.png")
    np.testing.assert_array_equal(pil_rgb(im), read_image(tmp_path / "rot.png").rgb)
    assert pil_rgb(im).shape == (24, 20, 3) and pil_rgb(im)[0, 0, 0] == 1 and pil_rgb(im)[-1, 0, 0] == 0
    out = upscale(Image.open(tmp_path / "rot.png"), pipeline=_pipe(tiny_checkpoints))
    assert out.size == (80, 96)
