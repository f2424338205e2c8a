"""Numerical parity with the official implementation, through the shipped parity runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sinsr_cli.parity import run_fixture

KEY_OUTPUTS = [
    "z_y", "x_T", "lq_up", "onestep_z0", "unet_out_t14", "unet_out_t5", "ddim_z0", "ancestral_z0",
    "z_y_decoded_raw", "onestep_image", "ddim_image", "ancestral_image", "pad_image", "chop_image01",
]


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def fp32_report(reference_dir):
    return run_fixture(reference_dir / "parity_small.safetensors")


def test_fp32_parity_green(fp32_report):
    bad = {k: v for k, v in fp32_report["errors"].items() if not v.get("ok")}
    assert fp32_report["ok"], bad
    for key in KEY_OUTPUTS:
        assert key in fp32_report["errors"], f"runner did not reproduce {key}"
    rows = fp32_report["errors"]
    assert rows["onestep_z0"]["max_abs_err"] <= 1e-4
    assert rows["unet_out_t14"]["max_abs_err"] <= 1e-4
    assert rows["onestep_image_e2e"]["codebook_flips"] == 0
    assert rows["ddim_z0"]["steps_checked"] == 15 and rows["ancestral_z0"]["steps_checked"] == 15


def test_runner_cli_prints_one_json_object_and_exit_code(reference_dir, tmp_path):
    # a broken copy of the fixture (perturbed output) must make the runner fail with exit 1
    from safetensors.torch import load_file, save_file

    src = reference_dir / "parity_small.safetensors"
    tensors = load_file(str(src))
    tensors["unet_out_t5"] = tensors["unet_out_t5"] + 1e-2
    meta = json.loads(src.with_suffix(".json").read_text())
    keep = [k for k in tensors if k.startswith(("unet.", "vq.")) or k in ("lq", "unet_in_x", "unet_out_t5", "z_y")]
    save_file({k: tensors[k].contiguous() for k in keep}, str(tmp_path / "fx.safetensors"))
    (tmp_path / "fx.json").write_text(json.dumps(meta))
    proc = subprocess.run(
        [sys.executable, "-m", "sinsr_cli.parity", str(tmp_path / "fx.safetensors")], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert not out["errors"]["unet_out_t5"]["ok"] and out["errors"]["z_y"]["ok"]


def test_runner_generalises_to_batch_and_non_square(reference_dir, tmp_path):
    """A fixture of another shape: batch 2, 64x128, outputs made by our own fp32 path."""
    from safetensors.torch import load_file, save_file

    from sinsr_cli.config import ModelPreset, ScheduleConfig, UNetConfig, VQConfig
    from sinsr_cli.models.checkpoints import split_prefixed
    from sinsr_cli.models.swin_unet import SwinUNet
    from sinsr_cli.models.vq_f4 import VQModel
    from sinsr_cli.pipeline import SRPipeline
    from sinsr_cli.diffusion.sampler import sample_onestep

    src = reference_dir / "parity_small.safetensors"
    meta = json.loads(src.with_suffix(".json").read_text())
    T = load_file(str(src))
    unet = SwinUNet(UNetConfig.from_official(meta["unet_params"]))
    unet.load_state_dict(split_prefixed(T, "unet."))
    vq = VQModel(VQConfig.from_official(meta["vq_params"]))
    vq.load_state_dict(split_prefixed(T, "vq."))
    pipe = SRPipeline(unet, vq, ModelPreset("x", unet.cfg, ScheduleConfig.from_official(meta["diffusion_params"]), 1, "onestep"))
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(2, 3, 64, 128, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 64, 128, generator=g)
    with torch.no_grad():
        z_y = pipe.encode(lq)
        z0 = sample_onestep(pipe.denoiser(lq), z_y, pipe.schedule, noise)
    out = {k: v for k, v in T.items() if k.startswith(("unet.", "vq."))}
    out.update(lq=lq, noise=noise, z_y=z_y, onestep_z0=z0)
    save_file({k: v.contiguous() for k, v in out.items()}, str(tmp_path / "b2.safetensors"))
    (tmp_path / "b2.json").write_text(json.dumps({k: meta[k] for k in ("unet_params", "vq_params", "diffusion_params")}))
    rep = run_fixture(tmp_path / "b2.safetensors")
    assert rep["ok"] and rep["errors"]["onestep_z0"]["max_abs_err"] <= 1e-5


def _fixture_pipeline(reference_dir, dtype):
    from safetensors.torch import load_file

    from sinsr_cli.config import ModelPreset, ScheduleConfig, UNetConfig, VQConfig
    from sinsr_cli.models.checkpoints import load_strict, split_prefixed
    from sinsr_cli.models.swin_unet import SwinUNet
    from sinsr_cli.models.vq_f4 import VQModel
    from sinsr_cli.pipeline import SRPipeline

    src = reference_dir / "parity_small.safetensors"
    meta = json.loads(src.with_suffix(".json").read_text())
    T = load_file(str(src))
    unet = SwinUNet(UNetConfig.from_official(meta["unet_params"]))
    load_strict(unet, split_prefixed(T, "unet."))
    vq = VQModel(VQConfig.from_official(meta["vq_params"]))
    load_strict(vq, split_prefixed(T, "vq."))
    sched = ScheduleConfig.from_official(meta["diffusion_params"])
    return SRPipeline(unet, vq, ModelPreset("fx", unet.cfg, sched, 1, "onestep")).to("cpu", dtype), T


def test_bf16_one_step_on_fixture_is_finite_and_close(reference_dir):
    """bf16 end to end (measured: z_y 8.3e-3, one-step latent 3.3e-2 on a latent of std 0.07)."""
    from sinsr_cli.diffusion.sampler import sample_onestep

    pipe, T = _fixture_pipeline(reference_dir, torch.bfloat16)
    with torch.inference_mode():
        z_y = pipe.encode(T["lq"])
        z0 = sample_onestep(pipe.denoiser(T["lq"]), z_y, pipe.schedule, T["noise"])
        img = pipe.decode(T["onestep_z0"])
    assert torch.isfinite(z0).all() and torch.isfinite(img).all()
    assert (z_y - T["z_y"]).abs().max() < 0.03
    assert (z0 - T["onestep_z0"]).abs().max() < 0.1


def test_fp16_unet_on_fixture_is_finite_and_close(reference_dir):
    """fp16 UNet call (fp16 convolutions on CPU are slow; the VQ path is covered on CUDA runs)."""
    pipe, T = _fixture_pipeline(reference_dir, torch.float16)
    t = torch.full((1,), 14, dtype=torch.long)
    with torch.inference_mode():
        out = pipe.denoiser(T["lq"])(T["unet_in_x"], t)
    assert torch.isfinite(out).all()
    assert (out - T["unet_out_t14"]).abs().max() < 0.02


def test_fp32_parity_runs_without_tf32(monkeypatch, tmp_path):
    """On Ampere+ GPUs cuDNN convolutions default to TF32 (~1e-3): the fp32 parity path turns
    every reduced fp32 mode off for its duration, and low precision leaves them alone."""
    import sinsr_cli.parity as parity
    from sinsr_cli.devices import precision_flags

    mm = torch.backends.cuda.matmul
    if not hasattr(mm, "fp32_precision"):
        pytest.skip("torch < 2.9: legacy TF32 flags")
    seen: list[dict] = []
    monkeypatch.setattr(parity, "_run_fixture", lambda path, dtype, dev: seen.append(precision_flags()) or {})
    before = precision_flags()
    parity.run_fixture(tmp_path / "x.safetensors", torch.float32)
    parity.run_fixture(tmp_path / "x.safetensors", torch.bfloat16)
    assert seen[0]["cuda_matmul_fp32_precision"] == "ieee" and seen[0]["cudnn_conv_fp32_precision"] == "ieee"
    assert seen[1] == before and precision_flags() == before


def test_decoder_parity_on_a_large_map_of_one_channel_groups():
    """Issue 11: an official-code fixture (tests/fixtures/README.md) whose decoder ends in
    32-channel GroupNorms over a 256 x 512 map. torch's channels_last kernel sums each channel in
    one running float32 sum there; before the fix z_y_decoded_raw was off by 9.7e-5, 20x the
    official code's own 1-vs-2-thread drift (4.7e-6); the runner holds it to 10x that drift."""
    rep = run_fixture(FIXTURES / "vq_small.safetensors")
    assert rep["ok"], {k: v for k, v in rep["errors"].items() if not v.get("ok")}
    assert rep["conditioning"] == "vq_small_conditioning.json"
    row = rep["errors"]["z_y_decoded_raw"]
    assert row["crop"] == [0, 96, 0, 256]
    assert row["reference_thread_drift"] == pytest.approx(4.74e-6, rel=0.01)
    assert row["tol"] == pytest.approx(10 * row["reference_thread_drift"])
    assert row["max_abs_err"] <= row["tol"]
    assert rep["errors"]["z_y"]["max_abs_err"] <= 1e-5
    assert rep["errors"]["z_y_vq_idx"]["index_mismatches"] == 0
    assert "onestep_z0" not in rep["errors"]  # an autoencoder-only fixture: no UNet rows


def test_image_tolerance_comes_from_the_fixtures_own_conditioning_file(tmp_path):
    """10x the reference's drift (floored at 1e-5) where NAME_conditioning.json has the tensor,
    1e-3 where it has not; another fixture's conditioning file is never used."""
    from sinsr_cli.parity import TOL_IMAGE, TOL_IMAGE_FLOOR, Tolerances, load_conditioning

    fx = tmp_path / "fx.safetensors"
    assert load_conditioning(fx) is None
    (tmp_path / "other_conditioning.json").write_text(json.dumps({"results": {"other": {"key_outputs_max_abs_diff": {"z_y": 1.0}}}}))
    assert load_conditioning(fx) is None
    (tmp_path / "fx_conditioning.json").write_text(
        json.dumps({"results": {"fx": {"key_outputs_max_abs_diff": {"onestep_image": 2e-5, "pad_image": 0.0}}}})
    )
    tols = Tolerances(True, load_conditioning(fx))
    assert tols.image("onestep_image")[0] == pytest.approx(2e-4)
    assert tols.image("onestep_image")[1]["reference_thread_drift"] == 2e-5
    assert tols.image("pad_image")[0] == TOL_IMAGE_FLOOR
    assert tols.image("ddim_image")[0] == TOL_IMAGE
    assert Tolerances(False, load_conditioning(fx)).image("onestep_image")[0] is None


def test_a_file_that_is_not_a_runnable_fixture_is_one_json_line_exit_2(reference_dir, tmp_path, capsys):
    """Exit 1 is kept for parity failures: every wrong file is one error naming it, exit 2."""
    from sinsr_cli.parity import main

    small = reference_dir / "parity_small.safetensors"
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "junk.json").write_text("{}")
    for stem, sidecar in (("list", "[1, 2]"), ("empty", "{}"), ("nojson", "{")):
        (tmp_path / f"{stem}.safetensors").symlink_to(small)
        (tmp_path / f"{stem}.json").write_text(sidecar)
    (tmp_path / "alone.safetensors").symlink_to(small)
    side = lambda stem: tmp_path / f"{stem}.json"  # noqa: E731
    cases = [  # (argument, the file the error names, what it says)
        (small.with_suffix(".json"), small.with_suffix(".json"),
         "this is a fixture's JSON sidecar; pass the tensors beside it, parity_small.safetensors"),
        (tmp_path / "missing.safetensors", tmp_path / "missing.safetensors", "fixture not found"),
        (tmp_path / "alone.safetensors", side("alone"), "sidecar JSON not found"),
        (tmp_path / "junk.safetensors", tmp_path / "junk.safetensors", "not a safetensors file"),
        (tmp_path / "list.safetensors", side("list"), "sidecar is a JSON list, not an object"),
        (tmp_path / "empty.safetensors", side("empty"), "no 'vq_params' object"),
        (tmp_path / "nojson.safetensors", side("nojson"), "sidecar is not readable JSON"),
        (reference_dir / "parity_distill.safetensors", reference_dir / "parity_distill.safetensors",
         "a distillation fixture (student.*, teacher.*), not an inference parity fixture; tests/test_distill.py checks it"),
    ]
    for path, named, why in cases:
        assert main([str(path)]) == 2, path
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1, lines
        out = json.loads(lines[0])
        assert out["ok"] is False and out["fixture"] == str(path), out
        assert out["error"].startswith(f"{named}: ") and why in out["error"], out


def test_bad_params_in_the_sidecar_name_the_sidecar(reference_dir, tmp_path, capsys):
    from sinsr_cli.parity import main

    small = reference_dir / "parity_small.safetensors"
    meta = json.loads(small.with_suffix(".json").read_text())
    del meta["vq_params"]["ddconfig"]
    (tmp_path / "fx.safetensors").symlink_to(small)
    (tmp_path / "fx.json").write_text(json.dumps(meta))
    assert main([str(tmp_path / "fx.safetensors")]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == f"{tmp_path / 'fx.json'}: vq_params does not describe the model ('ddconfig' is missing)"
