"""`sinsr distill` end to end on tiny models: it learns, it resumes exactly, DDP equals gradient
accumulation, and the exported student loads in the pipeline.

The tiny setup (``test_distill.py``): a one-level Swin-UNet teacher on 8x8 latents (32 px HR
crops), 4 deterministic teacher steps, a tiny VQ-f4; one CPU thread.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sinsr_cli.cli.app import app
from sinsr_cli.diffusion.sampler import sample_onestep
from sinsr_cli.diffusion.schedule import make_schedule
from sinsr_cli.distill.degradations import degrade
from sinsr_cli.distill.losses import LossWeights, distill_losses, encode_latents, teacher_x0
from sinsr_cli.distill.trainer import DistillConfig, read_checkpoint_state, train
from sinsr_cli.models.checkpoints import unet_metadata, vq_metadata, write_safetensors
from sinsr_cli.pipeline import SRPipeline

from test_distill import TINY_CROP, smooth_images, tiny_teacher, write_hr_dir, write_pair_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    return write_hr_dir(tmp_path_factory.mktemp("hr"))


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """The tiny teacher and VQ as self-describing safetensors (what --teacher/--vq take)."""
    d = tmp_path_factory.mktemp("models")
    unet, vq, preset = tiny_teacher()
    t = write_safetensors(unet.state_dict(), d / "teacher.safetensors", unet_metadata(preset))
    v = write_safetensors(vq.state_dict(), d / "vq.safetensors", vq_metadata(vq.cfg))
    return t, v


def _records(path: Path) -> dict[int, dict]:
    """The last log record of each step (a resumed run appends; its records win)."""
    out: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "event" not in rec:
            out[rec["step"]] = rec
    return out


def _cli_args(teacher_files, hr_dir, out: Path, steps: int, *extra: str) -> list[str]:
    t, v = teacher_files
    return ["distill", "--teacher", str(t), "--vq", str(v), "--data", str(hr_dir), "--out", str(out),
            "--steps", str(steps), "--batch", "2", "--crop", str(TINY_CROP), "--workers", "0", "--warmup", "0",
            "--lr", "1e-3", "--ema", "0.9", "--log-every", "1", "--threads", "1", "-q", *extra]


# -- the proof: the student learns the teacher's multi-step map ---------------------------------------


def test_student_moves_towards_the_teachers_multistep_output(tmp_path, hr_dir):
    """200 steps on CPU: the EMA student's one-step output gets measurably closer to the
    teacher's deterministic 4-step output on held-out images and noise, and every loss term falls
    (each measured on a fixed held-out batch, before vs after)."""
    teacher, vq, preset = tiny_teacher()
    sched = make_schedule(preset.schedule)
    hr = smooth_images(99, 4, TINY_CROP)  # held out: other images, other noise
    lq = degrade(hr, None, torch.Generator().manual_seed(5)) * 2 - 1
    hr = hr * 2 - 1
    pipe = SRPipeline(copy.deepcopy(teacher), vq, preset)
    z_y, z_gt = encode_latents(pipe, lq, hr)
    noise = torch.randn(z_y.shape, generator=torch.Generator().manual_seed(97))
    target = teacher_x0(pipe, z_y, lq, noise)
    z_t = sched.prior_std() * noise + z_y

    def evaluate(unet):
        with torch.no_grad():
            gap = F.mse_loss(sample_onestep(SRPipeline(unet, vq, preset).denoiser(lq), z_y, sched, noise), target).item()
            terms = distill_losses(unet, target, z_t, z_gt, lq, sched)
        return gap, {k: v.mean().item() for k, v in terms.items()}

    gap0, terms0 = evaluate(teacher)
    cfg = DistillConfig(data=str(hr_dir), batch=2, crop=TINY_CROP, steps=200, workers=0, log_every=50,
                        ckpt_every=10**6, warmup=0, lr=2e-3, ema_rate=0.97)
    t0 = time.perf_counter()
    res = train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "run", device="cpu")
    elapsed = time.perf_counter() - t0
    gap1, terms1 = evaluate(res.ema)
    print(f"\n200 steps in {elapsed:.1f}s; one-step vs {sched.num_steps}-step MSE {gap0:.4f} -> {gap1:.4f}; "
          + ", ".join(f"{k} {terms0[k]:.4f} -> {terms1[k]:.4f}" for k in terms0))
    assert gap1 < 0.85 * gap0
    for k in ("distill", "inverse", "gt", "loss"):
        assert terms1[k] < terms0[k], k
    first, last = res.records[0], res.records[-1]
    assert last["distill"] < first["distill"] and last["gt"] < first["gt"]


# -- resume -----------------------------------------------------------------------------------------------


class _Killed(Exception):
    pass


def _failing_call(real, n: int, error: BaseException):
    """``real``, except that its ``n``-th call raises ``error`` (a failure injected mid-run)."""
    calls = {"n": 0}

    def call(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return real(*a, **k)

    return call


def test_interrupted_run_resumes_on_the_same_curve(tmp_path, hr_dir, monkeypatch):
    """A failure inside step 6 (checkpoint at 4): the run saves step 5 on its way out; resumed,
    the same losses at the same steps and the same final weights as an uninterrupted run."""
    import sinsr_cli.distill.trainer as tr

    teacher, vq, preset = tiny_teacher()
    cfg = DistillConfig(data=str(hr_dir), batch=4, micro_batch=2, crop=TINY_CROP, steps=8, workers=0, log_every=1,
                        ckpt_every=4, warmup=3, lr=1e-3, ema_rate=0.9)
    full = train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "full", device="cpu")

    real = tr.student_losses
    monkeypatch.setattr(tr, "student_losses", _failing_call(real, 11, _Killed()))  # two micro-batches a step: step 6's first
    with pytest.raises(_Killed):
        train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "cut", device="cpu")
    monkeypatch.setattr(tr, "student_losses", real)
    assert [p.name for p in tr.list_checkpoints(tmp_path / "cut")] == ["step_00000004.pt", "step_00000005.pt"]
    resumed = train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "cut", device="cpu", resume=tmp_path / "cut")
    a, b = _records(tmp_path / "full" / "log.jsonl"), _records(tmp_path / "cut" / "log.jsonl")
    assert sorted(b) == list(range(1, 9))
    for step in range(1, 9):
        for k in ("loss", "distill", "inverse", "gt", "lr"):
            assert b[step][k] == pytest.approx(a[step][k], rel=1e-6, abs=1e-9), (step, k)
    for k, v in full.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[k], v, atol=1e-6, rtol=1e-5)


def test_a_failed_run_logs_the_steps_it_saves(tmp_path, hr_dir, monkeypatch):
    """Logging every 4 steps, a failure in step 6 saves step 5: its record (steps 5's window) is
    written too, so the resumed log covers every step (it went from 4 to 8)."""
    import sinsr_cli.distill.trainer as tr

    teacher, vq, preset = tiny_teacher()
    cfg = DistillConfig(data=str(hr_dir), batch=2, micro_batch=2, crop=TINY_CROP, steps=8, workers=0, log_every=4,
                        ckpt_every=8, warmup=3, lr=1e-3)
    real = tr.student_losses
    monkeypatch.setattr(tr, "student_losses", _failing_call(real, 6, _Killed()))  # one micro-batch a step: step 6
    with pytest.raises(_Killed):
        train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "run", device="cpu")
    monkeypatch.setattr(tr, "student_losses", real)
    cut = _records(tmp_path / "run" / "log.jsonl")
    assert sorted(cut) == [4, 5] and cut[5]["lr"] == pytest.approx(tr.learning_rate(5, cfg))
    train(cfg, copy.deepcopy(teacher), vq, preset, tmp_path / "run", device="cpu", resume=tmp_path / "run")
    assert sorted(_records(tmp_path / "run" / "log.jsonl")) == [4, 5, 8]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_cli_run(tmp_path, hr_dir, teacher_files):
    """`kill -9` of a real `sinsr distill` process, then `--resume`: the curve continues unchanged."""
    ref = tmp_path / "ref"
    assert CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, ref, 12, "--ckpt-every", "3")).exit_code == 0
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from sinsr_cli.cli.app import main; main()", *_cli_args(teacher_files, hr_dir, run, 12, "--ckpt-every", "3")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step_00000003.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint_state(run)["step"]
    assert killed_at < 12
    r = CliRunner().invoke(app, ["distill", "--resume", str(run), "--threads", "1", "-q"])
    assert r.exit_code == 0, r.output
    a, b = _records(ref / "log.jsonl"), _records(run / "log.jsonl")
    assert sorted(b) == sorted(a) == list(range(1, 13))
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-6), step


# -- multi-process (DDP on gloo) --------------------------------------------------------------------


def test_torchrun_two_processes_equal_gradient_accumulation(tmp_path, hr_dir, teacher_files):
    """`torchrun --nproc-per-node 2` of the same command (gloo, CPU) vs one process with the same
    global batch in two micro-batches: the same losses and the same exported student."""
    launcher = tmp_path / "sinsr_main.py"
    launcher.write_text("from sinsr_cli.cli.app import main\nmain()\n")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    common = ("--ckpt-every", "3")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(29400 + os.getpid() % 500), str(launcher),
           *_cli_args(teacher_files, hr_dir, ddp, 3, *common, "--export", str(ddp / "student.safetensors"))]
    cmd[cmd.index("--batch") + 1] = "4"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = _cli_args(teacher_files, hr_dir, single, 3, *common, "--micro-batch", "2", "--export", str(single / "student.safetensors"))
    args[args.index("--batch") + 1] = "4"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    a, b = _records(ddp / "log.jsonl"), _records(single / "log.jsonl")
    assert sorted(a) == [1, 2, 3]
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-5), step
        assert a[step]["grad_norm"] == pytest.approx(b[step]["grad_norm"], rel=1e-4), step
    from safetensors.torch import load_file

    sa, sb = load_file(str(ddp / "student.safetensors")), load_file(str(single / "student.safetensors"))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4)
    # only rank 0 wrote: one checkpoint directory, no per-rank files
    assert [p.name for p in (ddp / "checkpoints").iterdir()] == ["step_00000003.pt"]
    assert read_checkpoint_state(ddp)["world"] == 2


# -- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_pairs_validation_export_and_upscale(tmp_path, teacher_files):
    """--pairs + --val: a validation record with PSNR/SSIM; --export loads as a one-step model."""
    from sinsr_cli.pipeline import load_pipeline

    pairs = write_pair_dir(tmp_path / "pairs", n=3, lr_size=12)
    val = write_pair_dir(tmp_path / "val", n=2, lr_size=10, seed=5)
    t, v = teacher_files
    out, export = tmp_path / "run", tmp_path / "student.safetensors"
    args = ["distill", "--teacher", str(t), "--vq", str(v), "--pairs", str(pairs), "--val", str(val), "--val-every", "2",
            "--out", str(out), "--steps", "2", "--batch", "2", "--crop", str(TINY_CROP), "--workers", "1",
            "--log-every", "1", "--export", str(export), "--threads", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "exported the EMA student" in r.output
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    val_rec = [x for x in lines if x.get("event") == "val"]
    assert len(val_rec) == 1 and val_rec[0]["n"] == 2 and val_rec[0]["psnr"] > 5 and 0 < val_rec[0]["ssim"] <= 1
    pipe = load_pipeline(export, v, device="cpu", dtype="fp32")
    assert pipe.preset.default_sampler == "onestep" and pipe.preset.name == "sinsr-distilled"
    sr = pipe(torch.rand(1, 3, 10, 12), seed=0)
    assert sr.shape == (1, 3, 40, 48)
    # the export is the EMA of the last checkpoint
    state = read_checkpoint_state(out)
    from safetensors.torch import load_file

    exported = load_file(str(export))
    assert all(torch.equal(exported[k], state["ema"][k]) for k in exported)


def test_cli_resume_keeps_its_config_and_exports_without_training(tmp_path, hr_dir, teacher_files):
    out = tmp_path / "run"
    assert CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 2, "--ckpt-every", "1")).exit_code == 0
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--ema", "0.5"])
    assert r.exit_code == 2 and "--ema differs from the checkpoint" in r.output
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--tad"])
    assert r.exit_code == 2 and "loss weight differs" in r.output
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--hsd-reference", "gt"])
    assert r.exit_code == 2 and "--hsd-reference differs" in r.output
    export = tmp_path / "s.safetensors"
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--export", str(export), "-q"])
    assert r.exit_code == 0, r.output
    assert export.is_file() and read_checkpoint_state(out)["step"] == 2  # nothing left to train
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--steps", "3", "-q"])  # run control may change
    assert r.exit_code == 0 and read_checkpoint_state(out)["step"] == 3
    # what the divergence message asks for: a lower rate, clipping, another precision
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--steps", "4", "--lr", "1e-5", "--clip-grad", "1", "--amp", "bf16", "-q"])
    assert r.exit_code == 0, r.output
    cfg = read_checkpoint_state(out)["config"]
    assert (cfg["lr"], cfg["clip_grad"], cfg["amp"]) == (1e-5, 1.0, "bf16")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "A", "--pairs", "B"], "exactly one of --data"),
        (["--data", "A"], "--teacher is required"),
        (["--data", "A", "--teacher", "t", "--amp", "fp8"], "unknown --amp"),
        (["--data", "A", "--teacher", "t", "--export", "x.pth"], "must end in .safetensors"),
        (["--resume", "/nonexistent/run"], "no such checkpoint"),
    ],
)
def test_cli_usage_errors_are_one_line(args, message):
    r = CliRunner().invoke(app, ["distill", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_cli_threads_must_not_be_negative(tmp_path, hr_dir, teacher_files):
    args = _cli_args(teacher_files, hr_dir, tmp_path / "run", 1)
    args[args.index("--threads") + 1] = "-1"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--threads must be >= 0" in r.output and not (tmp_path / "run").exists()


def test_a_new_run_never_mixes_with_an_old_one_nor_replaces_an_export(tmp_path, hr_dir, teacher_files):
    """A new run in a folder holding a run's checkpoints or log is refused before any model loads
    (pruning by step number deleted the new run's checkpoint among the old ones, and --resume of
    the folder took either); an existing --export needs --force, checked before training."""
    out, export = tmp_path / "run", tmp_path / "s.safetensors"
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 2, "--ckpt-every", "1", "--export", str(export)))
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    exported = export.read_bytes()
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 1, "--seed", "8"))
    assert r.exit_code == 2 and "holds another run" in r.output and f"--resume {out}" in r.output
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    (tmp_path / "logonly").mkdir()
    (tmp_path / "logonly" / "log.jsonl").write_text("{}\n")
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "logonly", 1))
    assert r.exit_code == 2 and "holds the log of a run that saved no checkpoint (nothing to resume); delete" in r.output
    r = CliRunner().invoke(app, ["distill", "--resume", str(tmp_path / "logonly")])
    assert r.exit_code == 2 and "no checkpoints (checkpoints/step_*.pt) to resume from (its run stopped before saving one)" in r.output
    (tmp_path / "afile").write_text("mine")
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "afile", 1))
    assert r.exit_code == 2 and r.output.startswith(f"error: --out: {tmp_path / 'afile'}: is a file, not a run folder")
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "zero", 0))
    assert r.exit_code == 2 and "--steps must be >= 1 for a new run" in r.output and not (tmp_path / "zero").exists()
    # from an earlier checkpoint of the same folder: its later checkpoints would be replaced
    first = sorted((out / "checkpoints").iterdir())[0]
    r = CliRunner().invoke(app, ["distill", "--resume", str(first), "--steps", "3"])
    assert r.exit_code == 2 and "would replace the run's later checkpoints" in r.output
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "new", 1, "--export", str(export)))
    assert r.exit_code == 2 and "already exists (use --force" in r.output and not (tmp_path / "new").exists()
    assert export.read_bytes() == exported
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--steps", "3", "--export", str(export), "--force", "-q"])
    assert r.exit_code == 0, r.output  # its own folder, and --force replaces the export
    assert export.read_bytes() != exported and read_checkpoint_state(out)["step"] == 3
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--steps", "4", "--out", str(tmp_path / "logonly"), "-q"])
    assert r.exit_code == 2 and "holds the log of a run" in r.output
    with pytest.raises(ValueError, match="holds another run"):  # the library's own check
        train(DistillConfig.from_dict(read_checkpoint_state(out)["config"]), *tiny_teacher(), out)


def test_unreadable_training_images_are_one_line_errors(tmp_path, teacher_files):
    """An empty x.png among the data stops the run before training; a truncated one, read by a
    DataLoader worker mid-run, is still one line naming the file (not the worker's traceback)."""
    data = write_hr_dir(tmp_path / "hr")
    (data / "empty.png").write_bytes(b"")
    r = CliRunner().invoke(app, _cli_args(teacher_files, data, tmp_path / "a", 1))
    assert r.exit_code == 2 and r.output.strip().splitlines() == [f"error: {data / 'empty.png'}: empty file"]
    (data / "empty.png").unlink()
    good = next(data.glob("*.png"))
    good.write_bytes(good.read_bytes()[:200])
    args = _cli_args(teacher_files, data, tmp_path / "b", 4)
    args[args.index("--workers") + 1] = "1"
    r = CliRunner().invoke(app, args)
    lines = r.output.strip().splitlines()
    # found by a worker mid-run: the run's failure (exit 1), its steps kept, the file named in one line
    assert r.exit_code == 1 and lines[0].startswith("error: ") and str(good) in lines[0], r.output
    assert lines[1:] == [] or (lines[1].startswith("saved step ") and lines[2].startswith("resume (once the cause is fixed)"))
    assert "Traceback" not in r.output and "DataLoader" not in r.output


def test_cli_tad_run_end_to_end(tmp_path, hr_dir, teacher_files):
    """`sinsr distill --tad`: the paper's objective (no SinSR inverse/GT terms), HSD and the
    discriminator logged, the discriminator checkpointed, an exported student that loads; and
    `--tad --lambda-inverse 1 --lambda-gt 1` keeps the SinSR-style terms on top."""
    from sinsr_cli.pipeline import load_pipeline

    out, export = tmp_path / "tad", tmp_path / "tad.safetensors"
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 2, "--tad", "--disc-channels", "8", "--export", str(export)))
    assert r.exit_code == 0, r.output
    state = read_checkpoint_state(out)
    cfg = DistillConfig.from_dict(state["config"])
    assert cfg.weights == LossWeights.tad() and (cfg.hsd_t_max, cfg.hsd_reference, cfg.disc_channels) == (3, "teacher", 8)
    assert state["disc"] is not None and state["disc_optimizer"]["state"]
    recs = _records(out / "log.jsonl")
    assert sorted(recs) == [1, 2]
    for rec in recs.values():
        assert rec["inverse"] == 0 and rec["gt"] == 0 and all(rec[k] == rec[k] for k in ("hsd", "adv", "disc"))  # finite
        assert rec["loss"] == pytest.approx(rec["distill"] + rec["hsd"] + 0.02 * rec["adv"], rel=1e-5)
    assert load_pipeline(export, teacher_files[1], device="cpu", dtype="fp32").preset.one_step
    both = tmp_path / "both"
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, both, 1, "--tad", "--lambda-inverse", "1", "--lambda-gt", "1",
                                          "--lambda-adv", "0", "--hsd-reference", "noise", "--hsd-omega", "x0"))
    assert r.exit_code == 0, r.output
    cfg = DistillConfig.from_dict(read_checkpoint_state(both)["config"])
    assert cfg.weights == LossWeights(1, 1, 1, 1, 0) and (cfg.hsd_reference, cfg.hsd_omega) == ("noise", "x0")
    rec = _records(both / "log.jsonl")[1]
    assert "disc" not in rec and rec["loss"] == pytest.approx(rec["distill"] + rec["inverse"] + rec["gt"] + rec["hsd"], rel=1e-5)
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "bad", 1, "--tad", "--hsd-reference", "hr"))
    assert r.exit_code == 2 and "unknown HSD reference" in r.output


def test_cli_help_lists_the_options():
    r = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for opt in ("--teacher", "--data", "--pairs", "--val", "--micro-batch", "--amp", "--clip-grad", "--resume",
                "--export", "--lambda-inverse", "--tad", "--lambda-hsd", "--lambda-adv", "--hsd-t-max",
                "--hsd-reference", "--hsd-omega", "--disc-lr", "--disc-channels", "--official-lr-quirk"):
        assert opt in r.output


# -- issue 15: a short run says what its schedule does, what it saved and how to go on -------------


def _short_args(teacher_files, hr_dir, out: Path, steps: int, *extra: str) -> list[str]:
    """`_cli_args` with the default warm-up and without -q: what a new user types."""
    args = _cli_args(teacher_files, hr_dir, out, steps, *extra)
    i = args.index("--warmup")
    del args[i : i + 2]
    args.remove("-q")
    return args


def test_twenty_step_run_with_the_default_warmup_warns(tmp_path, hr_dir, teacher_files, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out, export = tmp_path / "run", tmp_path / "student.safetensors"
    r = CliRunner().invoke(app, [*_short_args(teacher_files, hr_dir, out, 20), "--export", str(export)])
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1
    assert "warm-up (5000 iterations) does not end within the run (20 steps)" in warnings[0]
    assert "only reaches 4e-06 of 0.001" in warnings[0] and "--warmup" in warnings[0]
    rates = [rec["lr"] for rec in _records(out / "log.jsonl").values()]
    assert max(rates) == pytest.approx(1e-3 * 20 / 5000)
    assert "lr 4e-06" in r.output  # the progress line shows the rate
    assert f"exported the EMA student (step 20): {export}" in r.output
    assert f"sinsr distill --resume {out} --steps N (N > 20)" in r.output
    umask = os.umask(0o022)
    os.umask(umask)
    assert export.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file (mkstemp would give 0600)
    # milestones after the run only warn when asked for; quiet means errors only
    r = CliRunner().invoke(app, [*_cli_args(teacher_files, hr_dir, tmp_path / "q", 2), "--halve-at", "100"])
    assert r.exit_code == 0 and r.output == ""
    args = _cli_args(teacher_files, hr_dir, tmp_path / "m", 2, "--halve-at", "100")
    args.remove("-q")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "halving after iteration 100" in r.output and "--halve-at" in r.output
    assert f"export the EMA student: sinsr distill --resume {tmp_path / 'm'} --steps 2 --export student.safetensors" in r.output


def test_ctrl_c_says_what_was_saved_and_how_to_resume_or_export(tmp_path, hr_dir, teacher_files, monkeypatch):
    from sinsr_cli.distill import trainer

    real = trainer.optimizer_step
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "optimizer_step", step)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 10))
    assert r.exit_code == 130, r.output
    saved = out / "checkpoints" / "step_00000002.pt"
    assert saved.is_file()
    assert f"interrupted at step 2; saved {saved}" in r.output
    assert f"resume: sinsr distill --resume {out}" in r.output
    assert f"sinsr distill --resume {out} --steps 2 --export student.safetensors" in r.output
    monkeypatch.setattr(trainer, "optimizer_step", real)
    export = tmp_path / "student.safetensors"
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--steps", "2", "--export", str(export), "-q"])
    assert r.exit_code == 0 and export.is_file() and read_checkpoint_state(out)["step"] == 2


def test_cli_a_run_that_fails_midway_keeps_its_steps_and_says_how_to_resume(tmp_path, hr_dir, teacher_files, monkeypatch):
    """A failure once the run has started is the run's (exit 1, not a usage error): the steps done
    are saved and the resume command printed; the run then resumes."""
    import sinsr_cli.distill.trainer as tr

    real = tr.student_losses
    monkeypatch.setattr(tr, "student_losses", _failing_call(real, 3, OSError("disk went away")))
    out = tmp_path / "run"
    args = [a for a in _cli_args(teacher_files, hr_dir, out, 5) if a != "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    assert "error: OSError: disk went away (rerun with --verbose for details)" not in lines
    assert [ln for ln in lines if ln.startswith("error:")] == ["error: disk went away"]
    assert f"saved step 2: {out / 'checkpoints' / 'step_00000002.pt'}" in r.output
    assert f"resume (once the cause is fixed): sinsr distill --resume {out}" in r.output
    monkeypatch.setattr(tr, "student_losses", real)
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "-q"])
    assert r.exit_code == 0 and read_checkpoint_state(out)["step"] == 5


def test_cli_resume_refuses_another_teacher_and_non_finite_rates(tmp_path, hr_dir, teacher_files):
    out = tmp_path / "run"
    assert CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, out, 1)).exit_code == 0
    t, v = teacher_files
    other = tmp_path / "other.safetensors"  # the same architecture and schedule, other weights
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(t), "pt") as f:
        meta = f.metadata()
    state = {k: (x + 0.01) for k, x in load_file(str(t)).items()}
    save_file(state, str(other), meta)
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--teacher", str(other), "--steps", "2"])
    assert r.exit_code == 2 and "--teacher has other weights than the one this run was distilled from" in r.output
    r = CliRunner().invoke(app, ["distill", "--resume", str(out), "--teacher", str(t), "--steps", "2", "-q"])
    assert r.exit_code == 0, r.output  # the same teacher from its path is fine
    for flag, value in (("--lr", "inf"), ("--weight-decay", "nan"), ("--lambda-hsd", "inf"), ("--disc-lr", "-inf")):
        r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "n", 1, flag, value))
        assert r.exit_code == 2 and f"{flag} must be a finite number" in r.output, (flag, r.output)
    r = CliRunner().invoke(app, _cli_args(teacher_files, hr_dir, tmp_path / "n", 1, "--seed", "-1"))
    assert r.exit_code == 2 and "--seed must be in 0..2^63-1" in r.output
    r = CliRunner().invoke(app, ["distill", "--resume", str(t)])
    assert r.exit_code == 2 and f"{t}: is a safetensors file (model weights), not a training checkpoint" in r.output
    student = tmp_path / "student.safetensors"  # a one-step student is no teacher
    assert CliRunner().invoke(app, ["distill", "--resume", str(out), "--export", str(student), "-q"]).exit_code == 0
    r = CliRunner().invoke(app, _cli_args((student, v), hr_dir, tmp_path / "s2", 1))
    assert r.exit_code == 2 and "--teacher sinsr-distilled is a one-step student, not a ResShift teacher" in r.output
