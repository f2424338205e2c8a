"""The SR pipeline on tiny random models: shapes, padding, determinism, samplers (tiling and
the out-of-memory retry: test_engine.py)."""

from __future__ import annotations

import pytest
import torch

from sinsr_cli.pipeline import SRPipeline, pad_to_multiple


@pytest.mark.parametrize("h,w", [(16, 16), (20, 37), (64, 64), (70, 33), (1, 5)])
def test_output_is_exactly_4x_and_in_range(tiny_pipeline, h, w):
    out = tiny_pipeline(torch.rand(1, 3, h, w), seed=0)
    assert out.shape == (1, 3, 4 * h, 4 * w)
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


def test_pad_reflects_when_possible_else_replicates():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    p, (h, w) = pad_to_multiple(x, 8)
    assert p.shape == (1, 1, 8, 8) and (h, w) == (3, 4)
    small, _ = pad_to_multiple(torch.rand(1, 3, 40, 40), 64)
    assert small.shape[-2:] == (64, 64)


def test_same_seed_same_output_and_batch_equals_singles(tiny_pipeline):
    x = torch.rand(2, 3, 24, 40)
    a = tiny_pipeline(x, seed=3)
    b = tiny_pipeline(x, seed=3)
    assert torch.equal(a, b)
    c = tiny_pipeline(x, seed=4)
    assert not torch.equal(a, c)


def test_steps_and_sampler_resolution(tiny_pipeline):
    p = tiny_pipeline
    assert p.resolve_sampler(None, None) == "onestep"
    assert p.resolve_sampler(1, "ancestral") == "onestep"
    assert p.resolve_sampler(4, None) == "ancestral"
    assert p.resolve_sampler(4, "deterministic") == "deterministic"
    with pytest.raises(ValueError):
        p.resolve_sampler(0, None)
    with pytest.raises(ValueError):
        p.resolve_sampler(4, "euler")
    x = torch.rand(1, 3, 16, 16)
    for steps, sampler in ((4, "ancestral"), (3, "deterministic"), (15, "deterministic")):
        out = p(x, steps=steps, sampler=sampler, seed=0)
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_rejects_bad_shapes(tiny_pipeline):
    with pytest.raises(ValueError):
        tiny_pipeline(torch.rand(3, 16, 16))


@pytest.mark.parametrize("tile", [16, 100, 250, 255, 256, 320])
@pytest.mark.parametrize("tile_pad", [0, 8, 40])
def test_context_pad_fills_the_models_padding_with_real_context(tiny_pipeline, tile, tile_pad):
    m = tiny_pipeline.pad_multiple
    pad = tiny_pipeline.context_pad(tile, tile_pad)
    assert tile_pad <= pad < tile_pad + m // 2
    assert (tile + 2 * pad) % m in (0, m - 1)  # an odd remainder leaves one reflected row


def test_max_tile_of_the_full_size_model():
    """sinsr-v1 + vq-f4: a 704 px model input (688 px tile + 8 px context) is the largest under
    2^31 elements (the decoder's 256 x 2816 x 2816 map); the next multiple of 64 is past it."""
    from types import SimpleNamespace

    from sinsr_cli.config import VQ_PRESETS

    ns = SimpleNamespace(vq=SimpleNamespace(cfg=VQ_PRESETS["vq-f4"]), scale=4, pad_multiple=64)
    ns.max_input_pixels = lambda batch=1: SRPipeline.max_input_pixels(ns, batch)
    assert SRPipeline.max_tile(ns, 8) == 688
    assert 256 * (4 * 704) ** 2 < 2**31 <= 256 * (4 * 768) ** 2


def test_one_step_students_take_one_step(tiny_pipeline):
    import dataclasses

    from sinsr_cli.config import PRESETS, ModelPreset

    assert PRESETS["sinsr-v1"].one_step and PRESETS["sinsr-v2"].one_step
    assert not any(PRESETS[n].one_step for n in ("resshift-v1", "resshift-v2", "resshift-v3"))
    tiny_pipeline.preset = dataclasses.replace(tiny_pipeline.preset, name="student", one_step=True)
    assert tiny_pipeline.resolve_sampler(None, None) == tiny_pipeline.resolve_sampler(1, "onestep") == "onestep"
    for steps, sampler in ((4, None), (None, "ancestral"), (15, "deterministic")):
        with pytest.raises(ValueError, match="student is a one-step student"):
            tiny_pipeline.resolve_sampler(steps, sampler)
    with pytest.raises(ValueError, match="one-step"):
        tiny_pipeline(torch.rand(1, 3, 8, 8), steps=2)
    # a file written before the field existed: a one-step default sampler means a student
    d = PRESETS["sinsr-v1"].to_dict()
    del d["one_step"]
    assert ModelPreset.from_dict(d).one_step
    d = PRESETS["resshift-v1"].to_dict()
    del d["one_step"]
    assert not ModelPreset.from_dict(d).one_step


def test_unimplemented_official_schedule_fields_are_refused():
    from sinsr_cli.config import ScheduleConfig

    official = dict(steps=15, kappa=2.0, min_noise_level=0.04, etas_end=0.99, schedule_kwargs={"power": 0.3})
    assert ScheduleConfig.from_official({**official, "scale_factor": 1.0, "latent_flag": True}).scale_factor == 1.0
    with pytest.raises(ValueError, match="scale_factor: 0.18215 is not supported"):
        ScheduleConfig.from_official({**official, "scale_factor": 0.18215})
    with pytest.raises(ValueError, match="latent_flag: false"):
        ScheduleConfig.from_official({**official, "latent_flag": False})


def test_an_fp32_copy_of_a_low_precision_pipeline_has_the_files_weights(tiny_checkpoints):
    """The fp32 retry after a bf16/fp16 NaN runs the checkpoint's weights, not bf16-rounded ones
    converted back (which changed 19% of an output's 8-bit values on a tiny model)."""
    from sinsr_cli.pipeline import load_pipeline

    u, v = tiny_checkpoints
    low = load_pipeline(u, v, device="cpu", dtype="bf16")
    exact = load_pipeline(u, v, device="cpu", dtype="fp32")
    copy = low.with_dtype(torch.float32)
    assert copy.dtype == torch.float32 and low.dtype == torch.bfloat16
    assert {t.dtype for t in low.unet.parameters()} == {torch.bfloat16}  # the shared one untouched
    for mine, want in ((copy.unet, exact.unet), (copy.vq, exact.vq)):
        ref = want.state_dict()
        for k, t in mine.state_dict().items():
            assert torch.equal(t, ref[k]), k
    lq = torch.rand(1, 3, 16, 16)
    assert torch.equal(copy(lq), exact(lq))


def test_with_dtype_is_a_converted_copy_sharing_nothing(tiny_pipeline):
    copy = tiny_pipeline.with_dtype(torch.bfloat16)
    assert tiny_pipeline.dtype == torch.float32 and copy.dtype == torch.bfloat16
    assert {t.dtype for t in tiny_pipeline.unet.parameters()} == {torch.float32}
    assert copy.vq.quantize.embedding.weight.dtype == torch.float32  # the codebook stays float32
    assert copy.unet is not tiny_pipeline.unet and copy.vq is not tiny_pipeline.vq


def test_device_and_dtype_names_are_taken_everywhere(tiny_pipeline):
    """``SRPipeline(device="cpu")``, ``pipe.to(dtype="bf16")`` and ``make_plan(dtype="bf16")``
    take the names ``load_pipeline`` takes (one rule: ``devices.as_dtype``)."""
    from sinsr_cli.api import upscale
    from sinsr_cli.engine import Engine
    from sinsr_cli.plan import make_plan

    import copy

    unet, vq = copy.deepcopy(tiny_pipeline.unet), copy.deepcopy(tiny_pipeline.vq)  # p.to() must not convert the fixture's
    p = SRPipeline(unet, vq, tiny_pipeline.preset, device="cpu", dtype="fp32")
    assert p.device == torch.device("cpu") and p.dtype == torch.float32
    x = torch.rand(3, 8, 12)
    assert upscale(x, pipeline=p).shape == (3, 32, 48)
    plan = make_plan(p.preset, dtype="bf16")
    assert plan.dtype == torch.bfloat16
    assert Engine(p)(x[None], plan).shape == (1, 3, 32, 48)
    p.to(dtype="bf16")
    assert p.dtype == torch.bfloat16 and next(p.unet.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="depends on the device"):
        make_plan(p.preset, dtype="auto")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype or a name"):
        p.to(dtype=32)
