"""`sinsr distill` building blocks: parity of the loss terms with the official code, the student
calls, TAD-SR's HSD and time-aware discriminator, data, schedule, EMA, config, checkpoints and the
NaN guard.

The training runs themselves (convergence, resume, DDP, CLI) are in ``test_distill_train.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sinsr_cli.config import ModelPreset, ScheduleConfig, UNetConfig, VQConfig, tiny_preset
from sinsr_cli.diffusion.forward import eps_from_x0, predict_x0_at, q_sample
from sinsr_cli.diffusion.sampler import predict_x0, prior_sample
from sinsr_cli.diffusion.schedule import make_schedule
from sinsr_cli.distill import discriminator as D
from sinsr_cli.distill import hsd
from sinsr_cli.distill.data import HRCrops, PairCrops, StreamSampler, find_pairs, load_val_pairs, mix_seed
from sinsr_cli.distill.losses import LEGACY_TAD, LossWeights, distill_losses, distill_terms, encode_latents, student_x0, teacher_x0
from sinsr_cli.distill.step import Models, discriminator_loss, prepare, student_losses
from sinsr_cli.distill.trainer import (
    DistillConfig,
    TrainingDiverged,
    ema_update,
    learning_rate,
    list_checkpoints,
    read_checkpoint_state,
    save_checkpoint,
    train,
)
from sinsr_cli.pipeline import SRPipeline
from sinsr_cli.imageio import SinsrIOError
from sinsr_cli.models.checkpoints import load_strict, split_prefixed
from sinsr_cli.models.swin_unet import SwinUNet
from sinsr_cli.models.vq_f4 import VQModel

# -- shared tiny setup (also used by test_distill_train.py) ------------------------------------

#: a one-level Swin-UNet on 8x8 latents (32 px HR crops): same classes, milliseconds per call
TINY_UNET = UNetConfig(
    model_channels=32, num_res_blocks=(1,), attention_resolutions=(), channel_mult=(1,),
    num_head_channels=16, swin_embed_dim=32, mlp_ratio=2.0, image_size=8,
)
TINY_VQ = VQConfig(n_embed=64, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1)
TINY_CROP = 32


def tiny_teacher(seed: int = 0) -> tuple[SwinUNet, VQModel, ModelPreset]:
    """A random 4-step teacher whose deterministic sampler is a non-trivial map (output std ~0.3)."""
    torch.manual_seed(seed)
    unet, vq = SwinUNet(TINY_UNET), VQModel(TINY_VQ)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_(0, 0.5)
    preset = ModelPreset("tiny-teacher", TINY_UNET, tiny_preset(steps=4).schedule, 4, "ancestral", "test teacher")
    return unet, vq, preset


def teacher_pipe(unet: SwinUNet, vq: VQModel, schedule_cfg: ScheduleConfig, name: str = "teacher") -> SRPipeline:
    """The frozen teacher + VQ as the pipeline distill uses (its encode, denoiser and schedule)."""
    return SRPipeline(unet, vq, ModelPreset(name, unet.cfg, schedule_cfg, schedule_cfg.steps, "ancestral", "test"))


def smooth_images(seed: int, n: int, size: int) -> torch.Tensor:
    """``[n,3,size,size]`` in [0,1]: bicubic upsampled 6x6 random colours (image-like, not noise)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def write_png(path: Path, img: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def write_hr_dir(root: Path, n: int = 8, size: int = 48, seed: int = 1) -> Path:
    for i, im in enumerate(smooth_images(seed, n, size)):
        write_png(root / ("sub" if i % 2 else "") / f"img{i}.png", im)
    return root


def write_pair_dir(root: Path, n: int = 4, lr_size: int = 12, seed: int = 2) -> Path:
    hr = smooth_images(seed, n, lr_size * 4)
    lr = F.avg_pool2d(hr, 4)
    for i in range(n):
        write_png(root / "hr" / f"p{i}.png", hr[i])
        write_png(root / "lr" / f"p{i}.png", lr[i])
    return root


# -- parity with the official training_losses_distill ------------------------------------------


@pytest.fixture(scope="module")
def distill_fixture(reference_dir):
    from safetensors.torch import load_file

    path = reference_dir / "parity_distill.safetensors"
    T = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    ucfg = UNetConfig.from_official(meta["unet_params"])
    sched_cfg = dataclasses.replace(ScheduleConfig.from_official(meta["diffusion_params"]), sinsr_min_clip=True)
    models = {}
    for prefix in ("student", "teacher"):
        m = SwinUNet(ucfg)
        load_strict(m, split_prefixed(T, f"{prefix}."), f"fixture {prefix}.*")
        models[prefix] = m
    vq = VQModel(VQConfig.from_official(meta["vq_params"]))
    load_strict(vq, split_prefixed(T, "vq."), "fixture vq.*")
    pipe = teacher_pipe(models["teacher"], vq, sched_cfg)
    return T, models["student"], pipe, make_schedule(sched_cfg)


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours = ours.detach().double()
    return float((ours - ref.double()).abs().max() / ref.double().abs().max())


def test_loss_terms_and_gradients_match_official(distill_fixture):
    """mse / mse_xT / mse_gt / loss within 1e-4 relative (and the gradients), from the fixture's inputs."""
    T, student, pipe, sched = distill_fixture
    z_y, z_gt = encode_latents(pipe, T["lq"], T["gt"])
    torch.testing.assert_close(z_y, T["z_y"], atol=1e-4, rtol=0)
    torch.testing.assert_close(z_gt, T["z_start_gt"], atol=1e-4, rtol=0)  # encode(gt) WITHOUT upsampling
    torch.testing.assert_close(prior_sample(z_y, sched, T["noise"]), T["z_t"], atol=1e-4, rtol=0)

    student.zero_grad()
    terms, x0 = distill_terms(student, T["z_start_teacher"], T["z_t"], T["z_start_gt"], T["lq"], sched)
    for ours, theirs in (("distill", "mse"), ("inverse", "mse_xT"), ("gt", "mse_gt"), ("loss", "loss")):
        assert terms[ours].shape == (2,)  # mean_flat: one value per sample
        assert _rel(terms[ours], T[theirs]) <= 1e-4, (ours, terms[ours], T[theirs])
    assert _rel(x0.detach(), T["pred_zstart"]) <= 1e-4
    loss_mean = terms["loss"].mean()
    assert _rel(loss_mean, T["loss_mean"]) <= 1e-4
    loss_mean.backward()
    params = dict(student.named_parameters())
    for key in (k for k in T if k.startswith("grad.")):
        # 5e-4: gradients cross the sensitive t=0 inversion call, whose output moves ~3e-5 relative
        # under mere float reassociation; the reference itself drifts up to 2e-4 on student outputs
        # between thread counts (NOTES §12). A wrong term, scale or detach is off by O(1).
        assert _rel(params[key[5:]].grad, T[key]) <= 5e-4, key


def test_student_calls_match_official_inputs(distill_fixture):
    """The four student calls see exactly the fixture's scaled inputs and timesteps (NOTES §10)."""
    T, student, _, sched = distill_fixture
    calls = []

    def spy(x, t, lq):
        calls.append((x.detach().clone(), t.clone(), torch.is_grad_enabled()))
        return student(x, t, lq)

    with torch.no_grad():
        distill_terms(spy, T["z_start_teacher"], T["z_t"], T["z_start_gt"], T["lq"], sched)
    assert len(calls) == 4
    # a few float32 ulps of the largest latent the inputs are made from (|z_t| ~8): the rounding
    # of a differently vectorised scale-and-add (1.1e-6 seen on an AVX2 host)
    atol = 4 * torch.finfo(torch.float32).eps * float(T["z_t"].abs().max())
    for i, (x, t, _) in enumerate(calls):
        torch.testing.assert_close(x, T[f"student_call{i}_x"], atol=atol, rtol=1e-6)
        assert torch.equal(t, T[f"student_call{i}_t"].long())


@pytest.mark.slow
def test_teacher_deterministic_chain_matches_official(distill_fixture):
    """The teacher's 15-step deterministic x0 (no grad), end to end from the fixture's noise.

    Bound: 10x the reference's own 1-vs-2-thread drift of ddim_z0 (3e-5), floored at 1e-4.
    """
    T, _, pipe, sched = distill_fixture
    z_y, _ = encode_latents(pipe, T["lq"], T["gt"])
    x0 = teacher_x0(pipe, z_y, T["lq"], T["noise"])
    assert not x0.requires_grad
    err = float((x0 - T["z_start_teacher"]).abs().max())
    assert err <= 3e-4, err


# -- the student calls and weights, without the fixture ------------------------------------------


class Recorder:
    """A fake student: returns ``x * scale + t`` and records each call."""

    def __init__(self):
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def __call__(self, x, t, lq):
        self.calls.append((x.detach().clone(), t.clone(), torch.is_grad_enabled()))
        return x * self.scale + t.view(-1, 1, 1, 1).float()


def _latents(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 8, 8, generator=g) for _ in range(3)] + [torch.rand(b, 3, 8, 8, generator=g) * 2 - 1]


def test_student_calls_scaling_timesteps_and_no_grad_inversion():
    sched = make_schedule(tiny_preset().schedule)
    x0_t, z_t, z_gt, lq = _latents()
    st = Recorder()
    terms = distill_losses(st, x0_t, z_t, z_gt, lq, sched)
    d = sched.input_divisor(sched.num_steps - 1)
    assert [int(c[1][0]) for c in st.calls] == [14, 0, 0, 14]
    assert [c[2] for c in st.calls] == [True, True, False, True]  # call 2 (GT inversion) under no_grad
    torch.testing.assert_close(st.calls[0][0], z_t / d)
    torch.testing.assert_close(st.calls[1][0], x0_t / d)  # t=0 call, still the t=T-1 divisor
    torch.testing.assert_close(st.calls[2][0], z_gt / d)
    torch.testing.assert_close(st.calls[3][0], (z_gt / d * 0.5) / d)
    for k in ("distill", "inverse", "gt", "loss"):
        assert terms[k].shape == (2,) and terms[k].dtype == torch.float32
    torch.testing.assert_close(terms["loss"], terms["distill"] + terms["inverse"] + terms["gt"])


def test_weights_scale_terms_and_zero_weights_skip_calls():
    sched = make_schedule(tiny_preset().schedule)
    x0_t, z_t, z_gt, lq = _latents()
    st = Recorder()
    t = distill_losses(st, x0_t, z_t, z_gt, lq, sched, LossWeights(2.0, 0.0, 0.5))
    assert len(st.calls) == 3  # no inversion call
    assert torch.equal(t["inverse"], torch.zeros(2))
    torch.testing.assert_close(t["loss"], 2 * t["distill"] + 0.5 * t["gt"])
    st2 = Recorder()
    distill_losses(st2, x0_t, z_t, z_gt, lq, sched, LossWeights(1.0, 1.0, 0.0))
    assert len(st2.calls) == 2
    with pytest.raises(ValueError):
        LossWeights(gt=-1)


def test_gradient_reaches_student_through_three_calls_only():
    """The inverted GT latent is detached: d loss_gt / d scale comes from call 3's own use only."""
    sched = make_schedule(tiny_preset().schedule)
    x0_t, z_t, z_gt, lq = _latents()
    st = Recorder()
    t = distill_losses(st, x0_t, z_t, z_gt, lq, sched, LossWeights(0.0, 0.0, 1.0))
    t["loss"].sum().backward()
    d = sched.input_divisor(14)
    a = st.scale.detach()
    xT = z_gt / d * a  # detached inversion
    out = xT / d * a + 14
    expected = (2 * (out - z_gt) * (xT / d)).flatten(1).mean(1).sum()  # d/da through call 3 only
    torch.testing.assert_close(st.scale.grad, expected)


# -- TAD-SR: the forward process, HSD, the time-aware discriminator ----------------------------------

#: a two-level UNet (8x8 and 4x4 maps): the discriminator's multi-scale features have two levels + middle
TWO_LEVEL_UNET = dataclasses.replace(TINY_UNET, num_res_blocks=(1, 1), channel_mult=(1, 2), window_size=4)


def _tiny_setup(seed: int = 0):
    teacher, vq, preset = tiny_teacher(seed)
    pipe = SRPipeline(teacher, vq, preset)
    return teacher, vq, preset, pipe, pipe.schedule


def test_tad_is_off_by_default_and_tad_weights_are_the_papers_objective():
    cfg = DistillConfig(data="x")
    assert cfg.weights == LossWeights(1, 1, 1, 0, 0)  # SinSR: no HSD, no adversarial term
    assert LossWeights.tad() == LossWeights(distill=1, inverse=0, gt=0, hsd=1, adv=0.02)  # L_distill + 1 L_HSD + 0.02 L_adv
    # the authors' configs/TAD-SR.yaml and code: t' in steps 1..3, the teacher's x0 as reference, omega 1, D at the student's rate
    assert (cfg.hsd_t_max, cfg.hsd_reference, cfg.hsd_omega, cfg.disc_lr, cfg.disc_channels) == (3, "teacher", "one", 5e-5, 64)
    for bad in (dict(hsd_reference="x"), dict(hsd_omega="sqrt"), dict(hsd_t_max=0), dict(disc_lr=0.0)):
        with pytest.raises(ValueError):
            DistillConfig(data="x", **bad)


def test_forward_process_at_per_sample_steps():
    sched = make_schedule(tiny_preset(steps=4).schedule)
    x0, zy, n = torch.randn(3, 2, 3, 4, 4).unbind(0)
    last = torch.full((2,), 3)
    torch.testing.assert_close(q_sample(x0, zy, sched, last, n), prior_sample(zy, sched, n) + (1 - sched.etas[-1].float()) * (x0 - zy), atol=1e-5, rtol=0)
    t = torch.tensor([0, 2])
    torch.testing.assert_close(eps_from_x0(q_sample(x0, zy, sched, t, n), x0, zy, sched, t), n, atol=1e-4, rtol=0)  # it inverts q_sample

    def den(x, tt):  # records what the denoiser sees; a non-trivial map
        return x * 0.5 + tt.view(-1, 1, 1, 1).float()

    got = predict_x0_at(den, x0, sched, t)
    for i in range(2):  # one step per sample == the sampler's predict_x0 at that step
        torch.testing.assert_close(got[i : i + 1], predict_x0(den, x0[i : i + 1], sched, int(t[i])))


def test_hsd_draws_t_prime_in_the_papers_range():
    t = hsd.sample_steps(3000, 3, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(t.tolist()) == {0, 1, 2}  # 0-based indices of ResShift's steps 1, 2, 3 (authors: randint(0, 3))
    t = D.sample_disc_steps(3000, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(t.tolist()) == {0, 1, 2}  # the discriminator's t: 0..T-2 (authors: randint(0, T-1))


def test_hsd_score_difference_matches_its_closed_form_for_a_linear_teacher():
    """Same noise on both branches: Δε = (1-η)(1 - c(1-η)/d)(x̂0 - x0_ref)/(κ√η) for D(x_in) = c x_in."""
    sched = make_schedule(tiny_preset(steps=4).schedule)
    c = 0.7
    xs, xr, zy, n = torch.randn(4, 3, 3, 4, 4).unbind(0)
    t = torch.tensor([0, 1, 2])
    delta = hsd.score_difference(lambda x, tt: c * x, xs, xr, zy, sched, t, n)
    eta = sched.etas[t].float().view(-1, 1, 1, 1)
    d = sched.on("cpu").input_divisor[t].view(-1, 1, 1, 1)
    expected = (1 - eta) * (1 - c * (1 - eta) / d) * (xs - xr) / (sched.kappa * eta.sqrt())
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=1e-4)
    # plain SDS: the reference score is the noise itself
    sds = hsd.score_difference(lambda x, tt: c * x, xs, None, zy, sched, t, n)
    x_s = q_sample(xs, zy, sched, t, n)
    torch.testing.assert_close(sds, eps_from_x0(x_s, c * x_s / d, zy, sched, t) - n)


@pytest.mark.parametrize("omega", ["one", "x0"])
def test_hsd_gradient_equals_its_closed_form_on_a_tiny_model(omega):
    """d(λ L_HSD)/dθ = J^T (λ ω(t') (ε̂(x^s) - ε̂(x^r)) / (C h w)): the loss's autograd gradient on a
    tiny student equals the vector-Jacobian product with the closed-form direction, and the
    teacher gets none."""
    teacher, vq, preset, pipe, sched = _tiny_setup()
    import copy

    student = copy.deepcopy(teacher).train().requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    z_y, noise, eps = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(3))
    lq = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    z_t = prior_sample(z_y, sched, noise)
    ref = teacher_x0(pipe, z_y, lq, noise)
    t = torch.tensor([0, 2])
    lam = 0.8
    x0 = student_x0(student, z_t, lq, sched)
    delta = hsd.score_difference(pipe.denoiser(lq), x0, ref, z_y, sched, t, eps)
    w = hsd.omega(sched, t, omega, x0)
    if omega == "x0":
        torch.testing.assert_close(w.flatten(), (sched.kappa * sched.sqrt_etas[t] / (1 - sched.etas[t])).float())
    loss = lam * hsd.hsd_loss(x0, w * delta)
    torch.testing.assert_close(loss, lam * 0.5 * (w * delta).pow(2).flatten(1).mean(1))  # its value: ½ mean(g²)
    params = [p for p in student.parameters()]
    got = torch.autograd.grad(loss.sum(), params, retain_graph=True)
    # the closed form, built by hand: ε̂ from the teacher's x0 at each re-noised latent
    x_s, x_r = q_sample(x0.detach(), z_y, sched, t, eps), q_sample(ref, z_y, sched, t, eps)
    div = sched.on("cpu").input_divisor[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        d_s = teacher(x_s / div, t, lq)
        d_r = teacher(x_r / div, t, lq)
    closed = eps_from_x0(x_s, d_s, z_y, sched, t) - eps_from_x0(x_r, d_r, z_y, sched, t)
    torch.testing.assert_close(delta, closed, atol=1e-5, rtol=1e-5)
    direction = lam * w * closed / x0[0].numel()
    want = torch.autograd.grad(x0, params, grad_outputs=direction)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert all(p.grad is None for p in teacher.parameters())


def test_encoder_features_are_the_encoders_multiscale_outputs():
    torch.manual_seed(0)
    unet = SwinUNet(TWO_LEVEL_UNET)
    assert unet.level_ends == (2, 3)  # [conv, res, down | res]: the last block of each level
    x, lq, t = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1, torch.tensor([0, 3])
    seen = []
    hooks = [unet.input_blocks[i].register_forward_hook(lambda m, i, o: seen.append(o)) for i in unet.level_ends]
    hooks.append(unet.middle_block.register_forward_hook(lambda m, i, o: seen.append(o)))
    out = unet(x, t, lq)
    for h in hooks:
        h.remove()
    feats = unet.encoder_features(x, t, lq)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 4), (2, 64, 4, 4), (2, 64, 4, 4)]
    assert [f.shape[1] for f in feats] == list(unet.level_channels())
    for f, s_ in zip(feats, seen):
        torch.testing.assert_close(f, s_)
    assert out.shape == x.shape


def test_time_aware_discriminator_shapes_time_conditioning_and_gradient_paths():
    torch.manual_seed(0)
    teacher = SwinUNet(TWO_LEVEL_UNET).eval().requires_grad_(False)
    sched = make_schedule(tiny_preset(steps=4).schedule)
    disc = D.TimeAwareDiscriminator.for_unet(teacher, out_channels=8)
    fake = torch.randn(2, 3, 8, 8, requires_grad=True)
    z_y, lq, eps = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    t = torch.tensor([0, 2])
    feats = D.teacher_features(teacher, fake, z_y, lq, sched, t, eps)
    logits = disc(feats, t)
    assert logits.shape == (2, 8 * (16 + 16 + 16))  # 8 logits per position of each of the three maps
    with torch.no_grad():  # the 3x3 convs start at zero (as the authors'); give them weights to see the conditioning
        for head in disc.heads:
            head.conv.weight.normal_(0, 0.1)
    a, b = disc([f.detach() for f in feats], t), disc([f.detach() for f in feats], t + 1)
    assert not torch.allclose(a, b)  # time-aware: the same features at another t give other logits
    D.hinge_g_loss(disc(feats, t)).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # through the frozen teacher encoder
    assert all(p.grad is None for p in teacher.parameters())


def test_hinge_losses():
    r, f = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[-3.0, 0.0, 0.25]])
    # D: mean relu(1 - real) + mean relu(1 + fake)
    torch.testing.assert_close(D.hinge_d_loss(r, f), torch.tensor([(0 + 0.5 + 2) / 3 + (0 + 1 + 1.25) / 3]))
    torch.testing.assert_close(D.hinge_g_loss(f), torch.tensor([-(-3.0 + 0.0 + 0.25) / 3]))
    assert torch.equal(D.hinge_d_loss(torch.full((2, 4), 2.0), torch.full((2, 4), -2.0)), torch.zeros(2))  # beyond the margins


def _tad_batch(m: Models, cfg: DistillConfig, seed: int = 0):
    hr = smooth_images(3, 2, TINY_CROP)
    return prepare(m, hr, F.avg_pool2d(hr, 4), cfg, torch.Generator().manual_seed(seed))


def _tad_models(out_channels: int = 8):
    teacher, vq, preset, pipe, sched = _tiny_setup()
    import copy

    student = copy.deepcopy(teacher).train().requires_grad_(True)
    disc = D.TimeAwareDiscriminator.for_unet(teacher, out_channels)
    with torch.no_grad():
        for head in disc.heads:
            head.conv.weight.normal_(0, 0.1)
    return Models(student, student, pipe, disc), teacher


def test_discriminator_loss_is_the_hinge_of_real_hr_and_fake_student_latents():
    m, teacher = _tad_models()
    cfg = DistillConfig(data="x", weights=LossWeights.tad())
    mb = _tad_batch(m, cfg)
    sched = m.teacher.schedule
    got = discriminator_loss(m, mb)
    with torch.no_grad():
        fake = student_x0(m.raw, mb.z_t, mb.lq, sched)
    real_f = D.teacher_features(teacher, mb.z_gt, mb.z_y, mb.lq, sched, mb.disc_t, mb.disc_noise)
    fake_f = D.teacher_features(teacher, fake, mb.z_y, mb.lq, sched, mb.disc_t, mb.disc_noise)
    torch.testing.assert_close(got, D.hinge_d_loss(m.disc(real_f, mb.disc_t), m.disc(fake_f, mb.disc_t)))
    got.mean().backward()
    assert all(p.grad is not None for p in m.disc.parameters() if p.requires_grad)
    assert all(p.grad is None for p in m.raw.parameters())  # the discriminator's loss never reaches the student


@pytest.mark.parametrize("weights", [LossWeights.tad(), LossWeights(0.5, 2.0, 0.0, 3.0, 0.1), LossWeights(1, 1, 1, 0, 0)])
def test_student_objective_has_the_terms_and_weights_the_flags_say(weights):
    m, _ = _tad_models()
    m.disc.requires_grad_(False)
    cfg = DistillConfig(data="x", weights=weights)
    calls = []
    real = m.student

    def spy(x, t, lq):
        calls.append(int(t[0]))
        return real(x, t, lq)

    m.student = spy
    terms = student_losses(m, _tad_batch(m, cfg), cfg)
    expect_terms = {"distill", "inverse", "gt", "loss"} | ({"hsd"} if weights.hsd else set()) | ({"adv"} if weights.adv else set())
    assert set(terms) == expect_terms
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in terms.values())
    total = sum(getattr(weights, k) * terms[k] for k in expect_terms - {"loss"})
    torch.testing.assert_close(terms["loss"], total)
    # a zero weight skips that term's student calls: TAD-SR's objective is one student call
    assert len(calls) == 1 + (weights.inverse > 0) + 2 * (weights.gt > 0)
    if weights.inverse == 0:
        assert torch.equal(terms["inverse"], torch.zeros(2))
    terms["loss"].mean().backward()
    assert all(p.grad is None for p in m.disc.parameters())  # the student's step never trains the discriminator
    assert m.raw.out[2].weight.grad is not None


def test_tad_adversarial_gradient_reaches_the_student():
    m, _ = _tad_models()
    m.disc.requires_grad_(False)
    cfg = DistillConfig(data="x", weights=LossWeights(0, 0, 0, 0, 1.0))
    student_losses(m, _tad_batch(m, cfg), cfg)["loss"].mean().backward()
    assert m.raw.out[2].weight.grad.abs().sum() > 0  # only the adversarial term is on


def test_earlier_tad_checkpoints_are_refused_and_plain_ones_still_load():
    old_plain = {**DistillConfig(data="x").to_dict(), "tad_t_max": 3, "disc_hidden": 128,
                 "weights": {"distill": 1, "inverse": 1, "gt": 1, "hf": 0, "adv": 0}}
    old_plain.pop("hsd_t_max"), old_plain.pop("hsd_reference"), old_plain.pop("hsd_omega"), old_plain.pop("disc_channels")
    assert DistillConfig.from_dict(old_plain).weights == LossWeights()
    old_tad = {**old_plain, "weights": {"distill": 1, "inverse": 1, "gt": 1, "hf": 1, "adv": 0.02}}
    with pytest.raises(ValueError, match="earlier TAD-SR approximation"):
        DistillConfig.from_dict(old_tad)
    assert "cannot be resumed" in LEGACY_TAD


# -- schedule, EMA, config ------------------------------------------------------------------------------


def test_learning_rate_warmup_halving_and_official_quirk():
    cfg = DistillConfig(data="x")  # lr 5e-5, warm-up 5000, halved after 500000
    assert learning_rate(1, cfg) == pytest.approx(5e-5 / 5000)
    assert learning_rate(2500, cfg) == pytest.approx(2.5e-5)
    assert learning_rate(5000, cfg) == pytest.approx(5e-5)
    assert learning_rate(500_000, cfg) == pytest.approx(5e-5)
    assert learning_rate(500_001, cfg) == pytest.approx(2.5e-5)
    q = dataclasses.replace(cfg, official_lr_quirk=True)
    # the official trainer: iteration 1 at the full rate, then the ramp one iteration late
    assert learning_rate(1, q) == pytest.approx(5e-5)
    assert learning_rate(2, q) == pytest.approx(5e-5 / 5000)
    assert learning_rate(5001, q) == pytest.approx(5e-5)
    assert learning_rate(500_000, q) == pytest.approx(5e-5)
    assert learning_rate(500_001, q) == pytest.approx(2.5e-5)
    assert learning_rate(1, dataclasses.replace(cfg, warmup=0)) == 5e-5


def test_ema_update_moves_parameters_only():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    a.register_buffer("buf", torch.zeros(1))
    b.register_buffer("buf", torch.ones(1))
    w0 = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    torch.testing.assert_close(a.weight, 0.9 * w0 + 0.1 * b.weight.detach())
    assert a.buf.item() == 0  # constant buffers are not averaged


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="exactly one"):
        DistillConfig()
    with pytest.raises(ValueError, match="exactly one"):
        DistillConfig(data="a", pairs="b")
    with pytest.raises(ValueError, match="amp"):
        DistillConfig(data="a", amp="fp8")
    with pytest.raises(ValueError, match="crop"):
        DistillConfig(data="a", crop=30)
    cfg = DistillConfig(data="a", weights=LossWeights.tad(), halve_at=(10, 20), hsd_reference="gt", hsd_omega="x0")
    back = DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


# -- data ---------------------------------------------------------------------------------------------------


def test_stream_is_sharded_by_rank_and_independent_of_world_size():
    one = StreamSampler(10, 4, seed=7)
    it = iter(one)
    single = [next(it) for _ in range(12)]  # 3 steps of 4
    shards = []
    for r in range(2):
        it = iter(StreamSampler(10, 4, seed=7, rank=r, world=2))
        shards.append([next(it) for _ in range(6)])
    for s in range(3):
        assert single[4 * s:4 * s + 4] == shards[0][2 * s:2 * s + 2] + shards[1][2 * s:2 * s + 2]
    # resuming at step 2 yields exactly the stream's continuation
    it = iter(StreamSampler(10, 4, seed=7, start_step=2))
    assert [next(it) for _ in range(4)] == single[8:12]
    # each epoch is a permutation of the images
    it = iter(StreamSampler(10, 5, seed=7))
    assert sorted(next(it)[0] for _ in range(10)) == list(range(10))
    with pytest.raises(ValueError, match="divisible"):
        StreamSampler(10, 3, seed=0, world=2)
    assert mix_seed(1, 2) != mix_seed(2, 1) and mix_seed(1, 2) == mix_seed(1, 2)


def test_hr_crops_are_deterministic_per_key(tmp_path):
    root = write_hr_dir(tmp_path / "hr", n=2, size=48)
    from sinsr_cli.distill.data import find_hr_images

    paths = find_hr_images(root)
    assert len(paths) == 2 and any("sub" in str(p) for p in paths)  # recursive
    for mode in ("rescale", "random"):
        ds = HRCrops(paths, crop=32, seed=3, crop_mode=mode)
        a, b, c = ds[(0, 5)]["hr"], ds[(0, 5)]["hr"], ds[(0, 6)]["hr"]
        assert a.shape == (3, 32, 32) and 0 <= a.min() and a.max() <= 1
        assert torch.equal(a, b)
        assert not torch.equal(a, c) or mode == "rescale"  # rescale of a square image may coincide
    small = HRCrops(paths, crop=64, seed=0, crop_mode="random")[(1, 0)]["hr"]
    assert small.shape == (3, 64, 64)  # padded up


def test_pair_crops_stay_aligned(tmp_path):
    root = write_pair_dir(tmp_path / "pairs", n=2, lr_size=12)
    pairs = find_pairs(root)
    assert [p[0].stem for p in pairs] == ["p0", "p1"]
    ds = PairCrops(pairs, crop=32, scale=4, seed=0)
    for key in range(4):
        item = ds[(key % 2, key)]
        assert item["hr"].shape == (3, 32, 32) and item["lq"].shape == (3, 8, 8)
        # the LR was made by 4x4 averaging: the crops still correspond (up to 8-bit rounding)
        torch.testing.assert_close(F.avg_pool2d(item["hr"][None], 4)[0], item["lq"], atol=3 / 255, rtol=0)
    with pytest.raises(SinsrIOError, match="smaller than the LR crop"):
        PairCrops(pairs, crop=64, scale=4)
    write_png(root / "lr" / "p1.png", torch.rand(3, 11, 12))
    with pytest.raises(SinsrIOError, match="not 4x its LR"):
        PairCrops(find_pairs(root), crop=32, scale=4)
    with pytest.raises(SinsrIOError, match="not 4x its LR"):  # validation pairs follow the same rule
        load_val_pairs(root)
    write_png(root / "lr" / "alone.png", torch.rand(3, 12, 12))
    with pytest.raises(SinsrIOError, match=r"1 LR image\(s\) have no HR image of the same name \(alone.png\)"):
        find_pairs(root)  # as in bench: half a pair is an error, for --pairs and --val alike
    (root / "lr" / "alone.png").unlink()
    with pytest.raises(SinsrIOError, match="lr/ and hr/"):
        find_pairs(tmp_path)
    write_png(root / "lr" / "p1.png", F.avg_pool2d(smooth_images(2, 2, 48), 4)[1])
    val = load_val_pairs(root, limit=1)
    assert len(val) == 1 and val[0].name == "p0" and val[0].hr.shape == (1, 3, 48, 48)


# -- checkpoints and the NaN guard (short runs of the real loop) ----------------------------------------------


def _cfg(data: Path, **kw) -> DistillConfig:
    base = dict(data=str(data), batch=2, crop=TINY_CROP, steps=3, workers=0, log_every=1, ckpt_every=2,
                warmup=0, lr=1e-3, ema_rate=0.9, keep=2)
    base.update(kw)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    return write_hr_dir(tmp_path_factory.mktemp("hr"))


def test_checkpoints_are_atomic_pruned_and_complete(tmp_path, hr_dir):
    teacher, vq, preset = tiny_teacher()
    res = train(_cfg(hr_dir, steps=5, ckpt_every=2), teacher, vq, preset, tmp_path / "run", device="cpu")
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["step_00000004.pt", "step_00000005.pt"]  # keep=2; the last step always saved
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporary files left
    state = read_checkpoint_state(tmp_path / "run")
    assert state["step"] == 5 and state["path"].endswith("step_00000005.pt")
    for key in ("student", "ema", "optimizer", "scaler", "config", "preset", "rng", "nan_streak"):
        assert key in state
    assert DistillConfig.from_dict(state["config"]).steps == 5
    assert state["preset"]["default_sampler"] == "onestep"
    # the student moved, the EMA lags behind it, and neither is the teacher any more
    t = teacher.state_dict()
    k = "out.2.weight"
    assert not torch.equal(state["student"][k], t[k]) and not torch.equal(state["ema"][k], state["student"][k])
    with pytest.raises(ValueError, match="not a"):
        bad = tmp_path / "bad.pt"
        save_checkpoint(bad, {"format": "other"})
        read_checkpoint_state(bad)


def test_nan_steps_are_skipped_counted_and_stop_the_run(tmp_path, hr_dir, monkeypatch):
    import sinsr_cli.distill.trainer as tr

    real = tr.student_losses
    calls = {"n": 0}

    def flaky(*a, **k):  # the second step's loss is NaN
        calls["n"] += 1
        terms = real(*a, **k)
        if calls["n"] == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(tr, "student_losses", flaky)
    teacher, vq, preset = tiny_teacher()
    seen = []
    res = train(_cfg(hr_dir, steps=3, ckpt_every=10), teacher, vq, preset, tmp_path / "a", device="cpu",
                on_event=lambda k, i: seen.append((k, i)))
    assert res.skipped == 1 and [i["step"] for k, i in seen if k == "skip"] == [2]
    assert math.isnan(res.records[1]["loss"]) and math.isfinite(res.records[2]["loss"])

    def always_nan(*a, **k):
        terms = real(*a, **k)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(tr, "student_losses", always_nan)
    teacher, vq, preset = tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row"):
        train(_cfg(hr_dir, steps=10, max_nan_steps=3, ckpt_every=10), teacher, vq, preset, tmp_path / "b", device="cpu")
    # the (skipped, so still finite) steps are kept: resume from them with another lr
    state = read_checkpoint_state(tmp_path / "b")
    assert (state["step"], state["skipped"]) == (3, 3) and [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_00000003.pt"]
    for k, v in teacher.state_dict().items():  # the teacher is frozen whatever happens
        assert torch.equal(v, before[k])


def test_bf16_autocast_and_fp16_scaler_steps_are_finite(tmp_path, hr_dir):
    teacher, vq, preset = tiny_teacher()
    r = train(_cfg(hr_dir, steps=2, amp="bf16", ckpt_every=10), teacher, vq, preset, tmp_path / "bf", device="cpu")
    assert all(math.isfinite(rec["loss"]) for rec in r.records)
    teacher, vq, preset = tiny_teacher()
    r = train(_cfg(hr_dir, steps=1, amp="fp16", ckpt_every=10, batch=1), teacher, vq, preset, tmp_path / "fp", device="cpu")
    state = read_checkpoint_state(tmp_path / "fp")
    assert state["scaler"] and state["scaler"]["scale"] > 0  # the scaler's state is checkpointed


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models are per-op-overhead bound: every test here runs on one thread."""


def test_tad_run_alternates_checkpoints_and_resumes_exactly(tmp_path, hr_dir, monkeypatch):
    """A TAD-SR run: discriminator step, then student step, every iteration (separate optimisers);
    the discriminator and its optimiser are checkpointed and a resumed run repeats the curve."""
    import sinsr_cli.distill.trainer as tr

    order = []
    real_d, real_g = tr.discriminator_step, tr.optimizer_step
    monkeypatch.setattr(tr, "discriminator_step", lambda *a, **k: (order.append("D"), real_d(*a, **k))[1])
    monkeypatch.setattr(tr, "optimizer_step", lambda *a, **k: (order.append("G"), real_g(*a, **k))[1])
    teacher, vq, preset = tiny_teacher()
    cfg = _cfg(hr_dir, steps=3, ckpt_every=2, batch=4, micro_batch=2, weights=LossWeights.tad(), disc_channels=8)
    full = train(cfg, teacher, vq, preset, tmp_path / "full", device="cpu")
    assert order == ["D", "G"] * 3
    assert {"hsd", "adv", "disc"} <= set(full.records[-1]) and full.records[-1]["inverse"] == 0
    state = read_checkpoint_state(tmp_path / "full")
    assert state["disc"] is not None
    assert {int(s["step"]) for s in state["disc_optimizer"]["state"].values()} == {3}  # one D step per iteration
    assert DistillConfig.from_dict(state["config"]).weights == LossWeights.tad()
    # stop after step 2 (checkpoint), resume: the same losses at step 3 and the same weights
    teacher, vq, preset = tiny_teacher()
    train(dataclasses.replace(cfg, steps=2), teacher, vq, preset, tmp_path / "cut", device="cpu")
    teacher, vq, preset = tiny_teacher()
    res = train(cfg, teacher, vq, preset, tmp_path / "cut", device="cpu", resume=tmp_path / "cut")
    assert res.step == 3
    for k in ("loss", "distill", "hsd", "adv", "disc"):
        assert res.records[-1][k] == pytest.approx(full.records[-1][k], rel=1e-5, abs=1e-7), k
    for k, v in full.ema.state_dict().items():
        torch.testing.assert_close(res.ema.state_dict()[k], v, atol=1e-6, rtol=1e-5)
    # a checkpoint without a discriminator cannot silently start one
    teacher, vq, preset = tiny_teacher()
    train(_cfg(hr_dir, steps=1), teacher, vq, preset, tmp_path / "plain", device="cpu")
    with pytest.raises(ValueError, match="no discriminator"):
        train(dataclasses.replace(cfg, steps=2), teacher, vq, preset, tmp_path / "plain", device="cpu", resume=tmp_path / "plain")


def test_optimizer_step_clips_and_skips_non_finite():
    from sinsr_cli.distill.step import optimizer_step

    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    finite, stepped, gnorm = optimizer_step(opt, scaler, [p], 1.0, 0.5)
    assert finite and stepped and gnorm == pytest.approx(5.0)  # the norm before clipping is reported
    torch.testing.assert_close(p.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))  # step of the clipped gradient
    p.grad = torch.tensor([float("inf"), 0.0, 0.0, 0.0])
    finite, stepped, _ = optimizer_step(opt, scaler, [p], 0.0, 0.5)
    assert not finite and not stepped and p.grad is None
    torch.testing.assert_close(p.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))  # untouched
    p.grad = torch.ones(4)
    assert optimizer_step(opt, scaler, [p], 0.0, float("nan"))[:2] == (False, False)


def test_discriminator_step_skips_non_finite():
    from sinsr_cli.distributed import DistInfo
    from sinsr_cli.distill.step import discriminator_step

    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    w0 = lin.weight.detach().clone()
    lin(torch.ones(1, 2)).sum().backward()
    assert discriminator_step(opt, scaler, lin, 0.3, DistInfo())
    assert not torch.equal(lin.weight, w0) and lin.weight.grad is None
    w1 = lin.weight.detach().clone()
    lin(torch.ones(1, 2)).sum().backward()
    assert not discriminator_step(opt, scaler, lin, float("inf"), DistInfo())
    assert torch.equal(lin.weight, w1) and lin.weight.grad is None


def test_no_grad_student_call_sees_the_updated_weights():
    """After an optimiser step, the no-grad inversion call must not use cached (stale) weights."""
    from sinsr_cli.distill.trainer import _adamw

    t, _, _ = tiny_teacher()
    s = __import__("copy").deepcopy(t).train().requires_grad_(True)
    opt = _adamw(s.parameters(), lr=1e-2)
    x, lq, tt = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1, torch.tensor([3, 0])
    for _ in range(2):
        with torch.no_grad():
            s(x, tt, lq)  # fills any no-grad caches
        s(x, tt, lq).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    fresh = __import__("copy").deepcopy(t)
    fresh.load_state_dict(s.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(s(x, tt, lq), fresh(x, tt, lq), atol=0, rtol=0)
