"""Parity runner: reproduce an official-code fixture and report max-abs errors per tensor.

    python -m sinsr_cli.parity FIXTURE.safetensors [--dtype fp32|fp16|bf16] [--threads N] [--device cuda]

Reads ``FIXTURE.json`` beside the tensors (constructor params in official names, which call
produced each tensor), builds our models from those params, loads ``unet.*`` / ``vq.*`` strictly
(a fixture without ``unet_params`` checks the autoencoder alone), recomputes every output it
recognises, prints ONE JSON object and exits 1 when any fp32 error exceeds its tolerance (2, with an ``error`` line naming the file,
when the fixture cannot be run at all). It relies only on the fixture's naming scheme, not on one fixture's
sizes: other configs, batch sizes and non-square shapes work.

fp32 runs in true IEEE fp32 (``devices.exact_fp32``): on Ampere and later GPUs cuDNN would
otherwise run convolutions in TF32, about 1e-3 relative, ten times the latent tolerance.

Tolerances (fp32): 1e-4 on latents and direct UNet outputs (multi-step latents are checked per
step from the fixture's own previous state; the end-to-end chain gets 10x the reference's own
thread-count drift, floored at 1e-4). Images: where the fixture has a conditioning file
(``NAME_conditioning.json``: the official code recomputed with 1 thread instead of 2), every
image is held to 10x the reference's own drift on that tensor, floored at 1e-5 (float noise of
values of order 1), and each row reports the drift and the ratio; without one, 1e-3.
End-to-end images may differ where a codebook index flips (a random 3-D codebook has
near-ties); flips are counted and reported, and those images are held to their bound only when
nothing flipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from .config import ModelPreset, ScheduleConfig
from .devices import DTYPES, dtype_from_name, exact_fp32, resolve_device
from .diffusion.sampler import predict_x0, prior_sample, sample_ancestral, sample_deterministic, sample_onestep
from .diffusion.schedule import make_schedule
from .errors import one_line
from .fixture import FixtureError, fixture_configs, load_conditioning, load_fixture
from .models.checkpoints import load_strict, split_prefixed
from .models.swin_unet import SwinUNet
from .models.vq_f4 import VQModel
from .pipeline import SRPipeline, bicubic_up, encode_lq, pad_to_multiple, place_vq

TOL_LATENT = 1e-4
TOL_IMAGE = 1e-3
#: end-to-end multi-step latents and (with a conditioning file) images: this many times the
#: reference's own thread drift
DRIFT_FACTOR = 10.0
#: the least image tolerance a conditioning file can give (a drift of 0 is possible)
TOL_IMAGE_FLOOR = 1e-5

class Tolerances:
    """Bounds per tensor: fixed for latents, from the conditioning file for images where known."""

    def __init__(self, enforce: bool, drift: dict[str, float] | None) -> None:
        self.enforce = enforce
        self.drift = drift
        self.latent = TOL_LATENT if enforce else None

    def image(self, ref_key: str) -> tuple[float | None, dict[str, Any]]:
        """``(tol, extra row fields)`` for an image compared with the fixture tensor ``ref_key``."""
        d = None if self.drift is None else self.drift.get(ref_key)
        if d is None:
            return (TOL_IMAGE if self.enforce else None), {}
        tol = max(TOL_IMAGE_FLOOR, DRIFT_FACTOR * d) if self.enforce else None
        return tol, {"reference_thread_drift": d, "tol_rule": f"max({TOL_IMAGE_FLOOR:g}, {DRIFT_FACTOR:g} x drift)"}

    def chain(self, key: str) -> tuple[float | None, float | None]:
        """End-to-end multi-step latent: ``(tol, drift)``, 10x drift floored at the latent bound."""
        d = None if self.drift is None else self.drift.get(key)
        if self.latent is None:
            return None, d
        return (max(TOL_LATENT, DRIFT_FACTOR * d) if d else TOL_LATENT), d


class Report:
    """Collects ``{name: {max_abs_err, tol, ok, ...}}``; ``enforce`` False for low precision."""

    def __init__(self, enforce: bool, crops: dict[str, list[int]] | None = None) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.enforce = enforce
        #: fixture tensors stored as a window ``[y0, y1, x0, x1]`` of the full output (sidecar ``crop``)
        self.crops = crops or {}

    def add(
        self, name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float | None, ref_key: str | None = None, **extra: Any
    ) -> None:
        box = self.crops.get(ref_key or name)
        if box is not None:
            ours = ours[..., box[0] : box[1], box[2] : box[3]]
            extra["crop"] = box
        if ours.shape != ref.shape:
            self.rows[name] = {"ok": False, "error": f"shape {tuple(ours.shape)} != {tuple(ref.shape)}"}
            return
        err = (ours.double() - ref.double()).abs().max().item()
        finite = bool(torch.isfinite(ours).all())
        row: dict[str, Any] = {"max_abs_err": err, "tol": tol, "finite": finite, **extra}
        drift = extra.get("reference_thread_drift")
        if drift:
            row["x_reference_drift"] = err / drift
        row["ok"] = finite and (tol is None or not self.enforce or err <= tol)
        self.rows[name] = row

    def note(self, name: str, **row: Any) -> None:
        row.setdefault("ok", True)
        self.rows[name] = row

    @property
    def ok(self) -> bool:
        return all(r.get("ok", True) for r in self.rows.values())


def run_fixture(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Recompute every recognised tensor of a fixture on ``device``; returns the report dict."""
    path = Path(path)
    dev = resolve_device(device)
    if dtype == torch.float32:
        with exact_fp32():
            return _run_fixture(path, dtype, dev)
    return _run_fixture(path, dtype, dev)


def _run_fixture(path: Path, dtype: torch.dtype, dev: torch.device) -> dict[str, Any]:
    T, meta = load_fixture(path)
    enforce = dtype == torch.float32
    crops = {k: v["crop"] for k, v in meta.get("tensors", {}).items() if isinstance(v, dict) and "crop" in v}
    rep = Report(enforce, crops)

    vq_cfg, sched_cfg, unet_cfg = fixture_configs(meta, path.with_suffix(".json"))
    if "diffusion_derived" in meta and "sqrt_etas" in meta["diffusion_derived"]:
        ref = torch.tensor(meta["diffusion_derived"]["sqrt_etas"], dtype=torch.float64)
        sinsr = ScheduleConfig(**{**sched_cfg.to_dict(), "sinsr_min_clip": True})
        plain = make_schedule(sched_cfg).sqrt_etas
        sched_cfg = sinsr if (make_schedule(sinsr).sqrt_etas - ref).abs().max() < (plain - ref).abs().max() else sched_cfg
    schedule = make_schedule(sched_cfg)
    if "diffusion_derived" in meta and "sqrt_etas" in meta["diffusion_derived"]:
        rep.add("sqrt_etas", schedule.sqrt_etas, torch.tensor(meta["diffusion_derived"]["sqrt_etas"], dtype=torch.float64), 1e-12)

    vq = VQModel(vq_cfg).eval().requires_grad_(False)
    load_strict(vq, split_prefixed(T, "vq."), "fixture vq.*")
    pipe = None
    if unet_cfg is not None:  # an autoencoder-only fixture has none
        unet = SwinUNet(unet_cfg)
        load_strict(unet, split_prefixed(T, "unet."), "fixture unet.*")
        pipe = SRPipeline(unet, vq, ModelPreset("fixture", unet_cfg, sched_cfg, 1, "onestep")).to(dev, dtype)
    else:
        place_vq(vq, dev, dtype)
    T = {k: v.to(dev) for k, v in T.items()}
    drift = load_conditioning(path)
    tols = Tolerances(enforce, drift)

    with torch.inference_mode():
        z_y = _vq_paths(T, vq, sched_cfg.sf, rep, tols)
        if pipe is not None:
            _main_paths(T, pipe, z_y, schedule, rep, tols)
            _padding(T, pipe, rep, tols)
            _chopping(T, meta, pipe, rep, tols)
    return {
        "fixture": str(path), "dtype": str(dtype).replace("torch.", ""), "device": str(dev), "ok": rep.ok,
        "conditioning": None if drift is None else f"{path.stem}_conditioning.json",
        "errors": rep.rows,
    }


def _flips(vq: VQModel, z: torch.Tensor, ref_idx: torch.Tensor | None) -> int | None:
    if ref_idx is None:
        return None
    return int((vq.quantize.indices(z.to(vq.dtype)) != ref_idx).sum())


def _image(rep: Report, tols: Tolerances, name: str, ours: torch.Tensor, ref_key: str, T, **extra: Any) -> None:
    tol, more = tols.image(ref_key)
    rep.add(name, ours, T[ref_key], tol, ref_key=ref_key, **more, **extra)


def _image_e2e(rep: Report, tols: Tolerances, name: str, ours: torch.Tensor, ref_key: str, T, flips: int | None) -> None:
    """End-to-end image: held to its bound only when no codebook index flipped."""
    tol, more = tols.image(ref_key)
    rep.add(name, ours, T[ref_key], tol if not flips else None, ref_key=ref_key, codebook_flips=flips, **more)


def _vq_paths(T, vq: VQModel, scale: int, rep: Report, tols: Tolerances) -> torch.Tensor | None:
    """Encode the fixture's lq, and decode every stored latent (strict: the fixture's own latent)."""
    z_y = None
    if "lq" in T:
        lq = T["lq"]
        if "lq_up" in T:
            rep.add("lq_up", bicubic_up(lq, scale), T["lq_up"], tols.latent)
        z_y = encode_lq(vq, lq, scale)
        if "z_y" in T:
            rep.add("z_y", z_y, T["z_y"], tols.latent)
    for lat in ("z_y", "onestep", "ddim", "ancestral"):
        zkey = "z_y" if lat == "z_y" else f"{lat}_z0"
        if zkey not in T:
            continue
        raw = vq.decode(T[zkey].to(vq.dtype)).float()
        rkey = "z_y_decoded_raw" if lat == "z_y" else f"{lat}_image_raw"
        if rkey in T:
            _image(rep, tols, rkey, raw, rkey, T)
        if f"{lat}_image" in T:
            _image(rep, tols, f"{lat}_image", raw.clamp(-1, 1), f"{lat}_image", T)
        if f"{lat}_vq_idx" in T:
            n = _flips(vq, T[zkey], T[f"{lat}_vq_idx"])
            rep.note(f"{lat}_vq_idx", index_mismatches=n, ok=(n == 0) or not rep.enforce)
    return z_y


def _main_paths(T, pipe: SRPipeline, z_y: torch.Tensor | None, schedule, rep: Report, tols: Tolerances) -> None:
    if z_y is None:
        return
    tol_lat = tols.latent
    lq = T["lq"]
    den = pipe.denoiser(lq)
    vq = pipe.vq
    z_y_ref = T.get("z_y", z_y)
    noise = T.get("noise")
    if noise is not None and "x_T" in T:
        rep.add("x_T", prior_sample(z_y, schedule, noise), T["x_T"], tol_lat)

    # direct UNet calls
    for key in T:
        m = re.fullmatch(r"unet_out_t(\d+)", key)
        if m and "unet_in_x" in T:
            t = torch.full((T["unet_in_x"].shape[0],), int(m.group(1)), dtype=torch.long, device=T["unet_in_x"].device)
            rep.add(key, den(T["unet_in_x"], t), T[key], tol_lat)

    if noise is None:
        return
    # one step
    if "onestep_z0" in T:
        z0 = sample_onestep(den, z_y, schedule, noise)
        rep.add("onestep_z0", z0, T["onestep_z0"], tol_lat)
        if "onestep_image" in T:
            flips = _flips(vq, z0, T.get("onestep_vq_idx"))
            _image_e2e(rep, tols, "onestep_image_e2e", pipe.decode(z0), "onestep_image", T, flips)

    # multi-step chains: per step from the fixture's previous state, then end to end
    n = schedule.num_steps
    for kind in ("ddim", "ancestral"):
        if f"{kind}_z0" not in T:
            continue
        worst_x0 = worst_s = 0.0
        steps_checked = 0
        for step in range(n):
            i = n - 1 - step
            xk, sk = f"{kind}_pred_xstart_{step}", f"{kind}_sample_{step}"
            if xk not in T or sk not in T:
                continue
            z_prev = T["x_T"] if step == 0 else T[f"{kind}_sample_{step - 1}"]
            x0 = predict_x0(den, z_prev, schedule, i)
            if kind == "ddim":
                k, m, j = schedule.ddim(i)
                s = x0 * k + m * z_prev + j * z_y_ref
            else:
                c1, c2, std = schedule.posterior(i)
                s = c1 * z_prev + c2 * x0
                if i > 0:
                    s = s + std * T[f"ancestral_noise_{step}"]
            rep.add(xk, x0, T[xk], tol_lat)
            rep.add(sk, s, T[sk], tol_lat)
            worst_x0 = max(worst_x0, rep.rows[xk].get("max_abs_err", 0.0))
            worst_s = max(worst_s, rep.rows[sk].get("max_abs_err", 0.0))
            steps_checked += 1
        if kind == "ddim":
            z0 = sample_deterministic(den, z_y, schedule, noise)
        else:
            noises = [T[f"ancestral_noise_{k}"] for k in range(n)] if f"ancestral_noise_{n - 1}" in T else None
            if noises is None:
                continue
            z0 = sample_ancestral(den, z_y, schedule, noise, step_noises=noises)
        tol, drift = tols.chain(f"{kind}_z0")
        rep.add(f"{kind}_z0", z0, T[f"{kind}_z0"], tol, reference_thread_drift=drift, steps_checked=steps_checked)
        if f"{kind}_image" in T:
            flips = _flips(vq, z0, T.get(f"{kind}_vq_idx"))
            _image_e2e(rep, tols, f"{kind}_image_e2e", pipe.decode(z0), f"{kind}_image", T, flips)



def _padding(T, pipe: SRPipeline, rep: Report, tols: Tolerances) -> None:
    """Non-multiple-of-64 input: reflect pad, one step, decode, crop (no stored latent)."""
    if "pad_lq" not in T or "pad_image" not in T:
        return
    lq = T["pad_lq"]
    padded, (h, w) = pad_to_multiple(lq, pipe.pad_multiple)
    z0 = pipe.sample_latent(padded, sampler="onestep", noise=T["pad_noise_0"])
    out = pipe.decode(z0)[..., : h * pipe.scale, : w * pipe.scale]
    # without the reference latent a codebook flip cannot be told apart: relax only at near-ties
    tol, more = tols.image("pad_image")
    rep.add("pad_image", out, T["pad_image"], None if _near_tie(pipe, z0) else tol, **more)


def _near_tie(pipe: SRPipeline, z: torch.Tensor) -> bool:
    """True when some latent lies within float noise of a codebook Voronoi boundary."""
    e = pipe.vq.quantize.embedding.weight.float()
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
    d = torch.cdist(flat, e) ** 2
    two = d.topk(2, largest=False).values
    return bool(((two[:, 1] - two[:, 0]) < 1e-6).any())


def _chopping(T, meta, pipe: SRPipeline, rep: Report, tols: Tolerances) -> None:
    chop = meta.get("inputs", {}).get("chop") or {}
    patches = chop.get("patches")
    for key in sorted(k for k in T if re.fullmatch(r"chop_lq\d+", k)):
        suffix = key[len("chop_lq") :]
        ref = T.get(f"chop_image{suffix}")
        if ref is None or not patches:
            continue
        img = T[key] * 2 - 1  # the chop works on [0,1] images
        b, _, h, w = img.shape
        s = pipe.scale
        acc = torch.zeros(b, 3, h * s, w * s, device=img.device)
        cnt = torch.zeros(b, 1, h * s, w * s, device=img.device)
        for p, patch in enumerate(patches):
            y0, y1, x0, x1 = patch["lq_box"]
            noise = T.get(f"chop_noise_{2 * p}")
            out = pipe.upscale_pm1(img[..., y0:y1, x0:x1], sampler="onestep", noise=noise)
            sy0, sy1, sx0, sx1 = patch["sr_box"]
            acc[..., sy0:sy1, sx0:sx1] += out
            cnt[..., sy0:sy1, sx0:sx1] += 1
        ours = acc / cnt * 0.5 + 0.5
        tol, more = tols.image(f"chop_image{suffix}")
        rep.add(f"chop_image{suffix}", ours, ref, tol, **more)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sinsr_cli.parity", description=__doc__.splitlines()[0])
    ap.add_argument("fixture", type=Path)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (the fixtures used 2)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run_fixture(args.fixture, dtype_from_name(args.dtype), args.device)
    except FixtureError as e:  # names its file already
        error = one_line(e, 500)
    except (OSError, ValueError, KeyError, TypeError) as e:  # e.g. weights that do not fit the params
        error = f"{args.fixture}: {one_line(e, 480)}"
    else:
        print(json.dumps(result, sort_keys=True))
        return 0 if result["ok"] else 1
    print(json.dumps({"fixture": str(args.fixture), "ok": False, "error": error}))
    return 2


if __name__ == "__main__":
    sys.exit(main())
