"""The whole path on a GPU, with tiny models: run with ``SINSR_TEST_DEVICE=cuda`` (or ``cuda:N``).

Skipped unless that variable names a CUDA device and torch sees one, so the suite passes on CPU
machines. ``benchmarks/gpu_check.py`` runs this file first on a lent GPU.
"""

from __future__ import annotations

import os
import weakref

import pytest
import torch

from conftest import REFERENCE, make_tiny_models

from sinsr_cli.config import tiny_preset
from sinsr_cli.devices import exact_fp32, is_oom_error, make_generator, precision_flags
from sinsr_cli.diffusion.sampler import randn_like
from sinsr_cli.pipeline import SRPipeline

_NAME = os.environ.get("SINSR_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.skipif(
    not (_NAME.startswith("cuda") and torch.cuda.is_available()),
    reason="set SINSR_TEST_DEVICE=cuda on a machine with a CUDA GPU",
)
DEVICE = torch.device(_NAME) if _NAME.startswith("cuda") else torch.device("cpu")


def _pipes(dtype: torch.dtype = torch.float32) -> tuple[SRPipeline, SRPipeline]:
    """The same tiny weights on the CPU (fp32) and on the GPU (``dtype``)."""
    cpu = SRPipeline(*make_tiny_models(), tiny_preset())
    gpu = SRPipeline(*make_tiny_models(), tiny_preset()).to(DEVICE, dtype)
    return cpu, gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tile", [0, 32])
def test_whole_path_on_the_gpu(dtype, tile):
    _, gpu = _pipes(dtype)
    before = precision_flags()
    out = gpu(torch.rand(1, 3, 72, 56), seed=0, tile=tile, tile_overlap=8)
    assert out.shape == (1, 3, 288, 224) and out.device.type == "cuda"
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert precision_flags() == before  # cudnn.benchmark only inside the tiled call


def test_same_seed_same_image_on_cpu_and_gpu():
    """Noise comes from a CPU generator: one seed is one image on either device (true fp32)."""
    cpu, gpu = _pipes()
    x = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with exact_fp32():
        a = cpu(x, seed=5)
        b = gpu(x, seed=5).cpu()
    assert (a - b).abs().max() < 1e-3
    g1, g2 = make_generator(7), make_generator(7)
    z = torch.zeros(2, 3, 16, 16)
    assert torch.equal(randn_like(z, g1), randn_like(z.to(DEVICE), g2).cpu())


def test_latents_match_the_cpu_in_true_fp32():
    cpu, gpu = _pipes()
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode(), exact_fp32():
        zc = cpu.sample_latent(lq, noise=noise)
        zg = gpu.sample_latent(lq.to(DEVICE), noise=noise.to(DEVICE)).cpu()
        flips = int((cpu.vq.quantize.indices(zc) != gpu.vq.quantize.indices(zc.to(DEVICE)).cpu()).sum())
    assert (zc - zg).abs().max() < 1e-4
    assert flips <= 2  # only exact near-ties of the random codebook may differ


@pytest.mark.parametrize("sampler,steps", [("ancestral", 4), ("deterministic", 3)])
def test_multistep_samplers_on_the_gpu(sampler, steps):
    _, gpu = _pipes(torch.float16)
    out = gpu(torch.rand(1, 3, 32, 32), seed=0, steps=steps, sampler=sampler)
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()
    tab = gpu.schedule.on(DEVICE)
    assert tab.ddim.device.type == "cuda" and gpu.schedule.on(DEVICE) is tab


def test_a_real_cuda_out_of_memory_is_recognised():
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**50, dtype=torch.uint8, device=DEVICE)  # a petabyte
    assert is_oom_error(info.value)


def test_a_failed_file_gives_its_gpu_memory_back(tmp_path):
    """After a file fails with tensors on the GPU, they are freed (not pinned by a traceback)
    and the cache is emptied before the next file."""
    import numpy as np
    from PIL import Image

    from sinsr_cli.batch import UpscaleOptions, plan_jobs, run_batch
    from sinsr_cli.imageio import collect_inputs

    for n in "ab":
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / f"{n}.png")
    _, gpu = _pipes(torch.float16)
    real = gpu.upscale_pm1
    calls, held = [], []
    reserved_at_b: list[int] = []

    def upscale_pm1(x, **kw):
        calls.append(1)
        if len(calls) == 1:
            big = torch.empty(256 * 2**20, dtype=torch.uint8, device=DEVICE)
            held.append(weakref.ref(big))
            raise RuntimeError("a failure with 256 MiB of activations on the GPU")
        reserved_at_b.append(torch.cuda.memory_reserved(DEVICE))
        return real(x, **kw)

    gpu.upscale_pm1 = upscale_pm1  # type: ignore[method-assign]
    options = UpscaleOptions(seed=0)
    items, rejected = collect_inputs([str(tmp_path)])
    report = run_batch(gpu, plan_jobs(items, rejected, options), options)
    assert [r.status for r in report.results] == ["failed", "done"] and held[0]() is None
    assert reserved_at_b and reserved_at_b[0] < 256 * 2**20  # the 256 MiB block went back


def test_fp32_parity_fixture_on_the_gpu():
    """The official fixture in true fp32 on the GPU (TF32 off inside the runner)."""
    fixture = REFERENCE / "parity_small.safetensors"
    if not fixture.is_file():
        pytest.skip(f"{fixture} not available")
    from sinsr_cli.parity import run_fixture

    rep = run_fixture(fixture, torch.float32, DEVICE)
    bad = {k: v for k, v in rep["errors"].items() if not v.get("ok", True)}
    assert rep["ok"], bad
