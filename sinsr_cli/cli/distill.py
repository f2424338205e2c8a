"""`sinsr distill`: turn a ResShift teacher into a one-step SinSR student (Typer only).

Parse -> build (teacher, VQ, config) -> ``distill.trainer.train`` -> render progress. The same
command runs under ``torchrun --nproc-per-node N``; only rank 0 prints.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer

from .common import EXIT_PARTIAL, console, fail, flag_message, handle_errors, quiet_option, shown

EXIT_INTERRUPTED = 130

#: options that only steer the run, or say where its files now are (may change on --resume)
_RUN_CONTROL = {
    "steps", "log_every", "ckpt_every", "keep", "val", "val_every", "val_max", "workers",
    "teacher", "vq", "data", "pairs", "name",
    "lr", "clip_grad", "amp",  # what the divergence message asks to change before resuming
}
#: CLI parameter name -> DistillConfig field, where they differ
_FIELD = {"ema": "ema_rate"}
_WEIGHTS = {"lambda_distill": "distill", "lambda_inverse": "inverse", "lambda_gt": "gt", "lambda_hsd": "hsd", "lambda_adv": "adv"}


@handle_errors
def distill_cmd(
    ctx: typer.Context,
    teacher: Optional[str] = typer.Option(None, "--teacher", help="ResShift teacher: zoo name (resshift-v1) or checkpoint file. Default on --resume: the stored one."),
    vq: str = typer.Option("vq-f4", "--vq", help="VQ-f4 autoencoder: zoo name or checkpoint file (frozen)."),
    data: Optional[str] = typer.Option(None, "--data", help="Folder of HR images (recursive); LR made on the fly by the Real-ESRGAN degradation."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Folder with lr/ and hr/ sub-folders, paired by file name."),
    val: Optional[str] = typer.Option(None, "--val", help="Folder with lr/ and hr/ validation pairs: PSNR/SSIM(/LPIPS) of the EMA student every --val-every steps."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: log.jsonl, checkpoints/ (default runs/distill; on --resume the checkpoint's run folder)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps (default 500000; on --resume the stored value)."),
    batch: int = typer.Option(64, "--batch", help="Global batch (all processes together)."),
    micro_batch: int = typer.Option(0, "--micro-batch", help="Samples per forward on one process; the rest is gradient accumulation (0: no accumulation)."),
    crop: int = typer.Option(256, "--crop", help="HR crop size (LR = crop/4, latent = crop/4)."),
    crop_mode: str = typer.Option("rescale", "--crop-mode", help="rescale: official (random square of the short side, resized to --crop); random: a native-resolution crop."),
    pool: int = typer.Option(0, "--pool", help="Training-pair pool size in samples (official: 10 x batch); 0 = off. Resuming refills it."),
    workers: int = typer.Option(4, "--workers", help="Data-loader worker processes (0: load in the main process; at most the CPUs available)."),
    lr: float = typer.Option(5e-5, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    warmup: int = typer.Option(5000, "--warmup", help="Linear warm-up iterations."),
    halve_at: list[int] = typer.Option([500_000], "--halve-at", help="Halve the rate after this iteration (repeatable)."),
    official_lr_quirk: bool = typer.Option(False, "--official-lr-quirk", help="Reproduce the official schedule's off-by-one: iteration 1 at the full rate, the ramp one iteration late."),
    ema: float = typer.Option(0.999, "--ema", help="EMA rate of the exported weights."),
    amp: str = typer.Option("no", "--amp", help="Mixed precision: no, bf16 or fp16 (with a gradient scaler)."),
    clip_grad: float = typer.Option(0.0, "--clip-grad", help="Clip the gradient norm to this (0 = off, as officially)."),
    max_nan_steps: int = typer.Option(10, "--max-nan-steps", help="Stop after this many non-finite steps in a row (each is skipped)."),
    lambda_distill: float = typer.Option(1.0, "--lambda-distill", help="Weight of L_distill = |S(x_T) - teacher x0|^2."),
    lambda_inverse: Optional[float] = typer.Option(None, "--lambda-inverse", help="Weight of SinSR's L_inverse = |S(teacher x0, t=0) - x_T|^2; 0 skips it (default 1, or 0 with --tad)."),
    lambda_gt: Optional[float] = typer.Option(None, "--lambda-gt", help="Weight of SinSR's L_gt = |S(sg[S(z_gt, 0)]) - z_gt|^2; 0 skips it (default 1, or 0 with --tad)."),
    tad: bool = typer.Option(False, "--tad", help="TAD-SR's objective: L_distill + 1 L_HSD + 0.02 L_adv, without SinSR's inverse and GT terms (each --lambda-* given still wins)."),
    lambda_hsd: Optional[float] = typer.Option(None, "--lambda-hsd", help="Weight of TAD-SR's high-frequency score distillation (default 0, or 1 with --tad)."),
    lambda_adv: Optional[float] = typer.Option(None, "--lambda-adv", help="Weight of TAD-SR's time-aware adversarial term for the student (default 0, or 0.02 with --tad)."),
    hsd_t_max: int = typer.Option(3, "--hsd-t-max", help="HSD re-noises at t' drawn uniformly from ResShift's steps 1..this (paper: 3)."),
    hsd_reference: str = typer.Option("teacher", "--hsd-reference", help="What the student's score is compared with: teacher (HSD: the teacher's x0), gt (the HR latent) or noise (plain SDS)."),
    hsd_omega: str = typer.Option("one", "--hsd-omega", help="HSD weight per step: one (the authors' code) or x0 (kappa sqrt(eta)/(1-eta): the x0-space residual)."),
    disc_lr: float = typer.Option(5e-5, "--disc-lr", help="AdamW rate of the discriminator (constant; the authors use the student's rate)."),
    disc_channels: int = typer.Option(64, "--disc-channels", help="Logits per position of each discriminator head (the authors' c_dim)."),
    seed: int = typer.Option(123456, "--seed", help="Seed of every random draw (data, noise, degradation)."),
    log_every: int = typer.Option(10, "--log-every", help="Write a log.jsonl record every N steps."),
    ckpt_every: int = typer.Option(1000, "--ckpt-every", help="Write a checkpoint every N steps (and at the end)."),
    keep: int = typer.Option(3, "--keep", help="Keep the last K checkpoints."),
    val_every: int = typer.Option(5000, "--val-every", help="Validate every N steps (with --val)."),
    val_max: int = typer.Option(16, "--val-max", help="Use at most this many validation pairs (0 = all)."),
    name: str = typer.Option("sinsr-distilled", "--name", help="Preset name written into the exported student."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Checkpoint file or run folder (latest checkpoint) to continue exactly."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write the EMA student here at the end (.safetensors, loadable by `sinsr upscale --model`)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --export file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: cuda:LOCAL_RANK)."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard scalars to OUT/tb (if tensorboard is installed)."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Distil a ResShift teacher into a one-step SinSR student (single process or torchrun/DDP)."""
    import torch

    from ..distill.losses import LossWeights
    from ..distill.state import check_run_folder
    from ..distill.trainer import DistillConfig, read_checkpoint_state, schedule_warnings, train
    from ..files import unwritable_reason
    from ..weights import load_unet, load_vq

    if threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if export is not None:  # checked now: the export is written after the whole run
        if export.suffix != ".safetensors":
            raise ValueError(f"--export {export}: must end in .safetensors")
        reason = unwritable_reason(export) or ("already exists (use --force to replace it)" if export.exists() and not force else None)
        if reason:
            raise ValueError(f"--export {export}: {reason}")
    base = LossWeights.tad() if tad else LossWeights()  # then every --lambda-* given wins
    asked = dict(distill=lambda_distill, inverse=lambda_inverse, gt=lambda_gt, hsd=lambda_hsd, adv=lambda_adv)
    weights = LossWeights(**{k: (getattr(base, k) if v is None else v) for k, v in asked.items()})
    given = {k: v for k, v in ctx.params.items() if _from_command_line(ctx, k)}
    fields: dict[str, Any] = dict(
        teacher=_abs(teacher) if teacher else "", vq=_abs(vq), data=_abs(data), pairs=_abs(pairs), val=_abs(val),
        name=name, steps=500_000 if steps is None else steps, batch=batch, micro_batch=micro_batch, crop=crop,
        crop_mode=crop_mode, pool=pool, workers=workers, lr=lr, weight_decay=weight_decay, warmup=warmup,
        halve_at=tuple(halve_at), official_lr_quirk=official_lr_quirk, ema_rate=ema, amp=amp, clip_grad=clip_grad,
        max_nan_steps=max_nan_steps, weights=weights, hsd_t_max=hsd_t_max, hsd_reference=hsd_reference,
        hsd_omega=hsd_omega, disc_lr=disc_lr, disc_channels=disc_channels, seed=seed,
        log_every=log_every, ckpt_every=ckpt_every, keep=keep, val_every=val_every, val_max=val_max,
    )
    if resume is not None:
        state = read_checkpoint_state(resume)
        cfg = _resumed_config(DistillConfig.from_dict(state["config"]), fields, given)
        resume = Path(state["path"])
        out = out or resume.parent.parent
    else:
        cfg = DistillConfig(**fields)
        if not teacher:
            raise ValueError("--teacher is required (a ResShift checkpoint or zoo name)")
        if cfg.steps < 1:
            raise ValueError(f"--steps must be >= 1 for a new run, got {cfg.steps}")
        out = out or Path("runs/distill")
    check_run_folder(out, resume)  # before the models load

    from ..distributed import from_env

    main = from_env().main
    talk = main and not quiet
    if talk:  # a schedule the run never gets through trains at a fraction of the rate, silently
        hints = {"warmup": f"lower --warmup (e.g. --warmup {max(1, cfg.steps // 10)})", "milestone": "see --halve-at"}
        for part, message in schedule_warnings(cfg, milestones="halve_at" in given):
            console.print(f"[yellow]warning:[/yellow] {shown(message)}; {hints[part]}", soft_wrap=True, highlight=False)
    teacher_model, preset = load_unet(cfg.teacher, setting="teacher")
    vq_model = load_vq(cfg.vq)
    render = _Render(enabled=talk)
    try:
        with render, _sigterm_as_interrupt():
            result = train(
                cfg, teacher_model, vq_model, preset, out, device=device, resume=resume, export=export,
                on_event=render, tensorboard=tensorboard,
            )
    except KeyboardInterrupt:
        if main:
            _after_interrupt(render, out, export)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # noqa: BLE001 - a run that failed once started: what was kept, exit 1
        if not render.started or not main:
            raise  # before the first step: a setting or an input, handled as usual
        if verbose:
            traceback.print_exc()
        raise _after_failure(render, out, export, e) from None
    if talk:
        if result.checkpoint is not None:
            console.print(f"checkpoint: {shown(result.checkpoint)}", soft_wrap=True)
        if result.skipped:
            console.print(f"[yellow]{result.skipped} step(s) skipped (non-finite loss or gradient)[/yellow]")
        trained = result.checkpoint is not None or resume is None
        run = _quoted(out if trained else resume.parent.parent)  # type: ignore[union-attr]
        if result.export is not None:
            console.print(f"exported the EMA student (step {result.step}): {shown(result.export)}", soft_wrap=True)
            console.print(f"upscale with it: sinsr upscale IMAGES --model {_quoted(result.export)}", soft_wrap=True)
        else:
            console.print(
                f"export the EMA student: sinsr distill --resume {run} --steps {result.step} --export student.safetensors",
                soft_wrap=True,
            )
        console.print(f"train further: sinsr distill --resume {run} --steps N (N > {result.step})", soft_wrap=True)


def _quoted(path: Path | str) -> str:
    """``path`` as a shell word inside a Rich markup line."""
    return shown(shlex.quote(str(path)))


def _after_interrupt(render: "_Render", out: Path, export: Optional[Path]) -> None:
    """What Ctrl-C (or SIGTERM) kept, and the exact commands to go on from it (also under -q)."""
    saved = render.last_checkpoint
    if saved is None:
        console.print("interrupted before the first step finished; nothing was saved")
        return
    step, path = saved
    run = _quoted(out)
    console.print(f"interrupted at step {step}; saved {shown(path)}", soft_wrap=True)
    console.print(f"resume: sinsr distill --resume {run}", soft_wrap=True)
    target = _quoted(export) if export is not None else "student.safetensors"
    console.print(f"or export it now: sinsr distill --resume {run} --steps {step} --export {target}", soft_wrap=True)


def _after_failure(render: "_Render", out: Path, export: Optional[Path], err: Exception) -> typer.Exit:
    """A run that failed after it started: the reason, what was kept and how to go on; exit 1."""

    exit_ = fail(flag_message(err), EXIT_PARTIAL)
    saved = render.last_checkpoint
    if saved is None:
        console.print("no checkpoint was saved: the run must start again", soft_wrap=True)
    else:
        step, path = saved
        console.print(f"saved step {step}: {shown(path)}", soft_wrap=True)
        console.print(f"resume (once the cause is fixed): sinsr distill --resume {_quoted(out)}", soft_wrap=True)
    return exit_


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's time limit) stops the run as Ctrl-C does: the steps done
    are saved and the way to resume is printed. Only in the main thread, where signals arrive."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # compared by name: typer may vendor its own copy of click's ParameterSource enum
    return getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"


def _abs(p: str | None) -> str | None:
    """Existing paths are stored absolute (a resumed run may start elsewhere); zoo names as given."""
    if p is None:
        return None
    return str(Path(p).resolve()) if Path(p).exists() else p


def _resumed_config(stored: Any, fields: dict[str, Any], given: dict[str, Any]) -> Any:
    """The checkpoint's config; run-control options given on the command line override it, and
    any other option given with a different value is an error (the run would not be the same)."""
    over: dict[str, Any] = {}
    for param in given:
        if param in ("resume", "export", "force", "device", "threads", "tensorboard", "quiet", "verbose", "out"):
            continue
        if param in _WEIGHTS or param == "tad":
            continue  # compared below, term by term
        key = _FIELD.get(param, param)
        value = fields[key]
        if key in _RUN_CONTROL:
            over[key] = value
        elif value != getattr(stored, key):
            raise ValueError(
                f"--{param.replace('_', '-')} differs from the checkpoint's ({getattr(stored, key)!r}); "
                "a resumed run keeps its configuration (start a new run to change it)"
            )
    asked = {_WEIGHTS[p]: getattr(fields["weights"], _WEIGHTS[p]) for p in given if p in _WEIGHTS}
    if "tad" in given:  # --tad asks for the whole TAD-SR objective (but the --lambda-* given)
        asked = {**fields["weights"].to_dict(), **asked}
    for term, value in asked.items():
        if value != getattr(stored.weights, term):
            raise ValueError(
                f"the {term} loss weight differs from the checkpoint's ({getattr(stored.weights, term)}); "
                "a resumed run keeps its own loss weights"
            )
    return replace(stored, **over)


_SHORT = {"loss": "L", "distill": "dist", "inverse": "inv", "gt": "gt", "hsd": "hsd", "adv": "adv", "disc": "D"}


class _Render:
    """Rich progress on stderr: step, loss terms, it/s, ETA; validation and checkpoints as lines."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        self.last_checkpoint: tuple[int, str] | None = None  # (step, path), recorded even when quiet
        self.started = False  # the run's first event came: a failure now is the run's, not a setting's

    def __enter__(self) -> "_Render":
        return self  # the bar starts with the run: an error before it leaves no empty bar line

    def _start(self) -> Any:
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]distill[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"), console=console, transient=False,
        )
        self.progress.__enter__()
        return self.progress

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, kind: str, info: dict) -> None:
        self.started |= kind == "start"
        if kind == "ckpt":
            self.last_checkpoint = (int(info["step"]), str(info["path"]))
        if not self.enabled:
            return
        p = self.progress
        if kind == "start":
            p = p or self._start()
            self.task = p.add_task("distill", total=info["steps"], completed=info["step"], rate="", terms="")
            p.console.print(
                f"{info['images']} training images, {info['params'] / 1e6:.1f}M student parameters, "
                f"{info['world']} process(es) on {info['device']}, {info['micro_batches']} micro-batch(es) per step"
                + (f", resuming at step {info['step']}" if info["step"] else "")
            )
        elif kind == "step" and self.task is not None:
            p.update(self.task, completed=info["step"])
        elif kind == "log" and self.task is not None:
            terms = " ".join(f"{short} {info[k]:.3g}" for k, short in _SHORT.items() if k in info)
            terms += f" lr {info['lr']:.2g}" if "lr" in info else ""
            rate = f"{1 / info['s_per_it']:.2f} it/s" if info["s_per_it"] >= 1e-9 else ""
            p.update(self.task, terms=terms, rate=rate)
        elif kind == "val":
            vals = " ".join(f"{k} {v:.4f}" for k, v in info.items() if k not in ("event", "step", "n"))
            console.print(f"step {info['step']} validation ({info['n']} images): {vals}")
        elif kind == "skip":
            console.print(f"[yellow]step {info['step']}: non-finite loss, step skipped ({info['streak']} in a row)[/yellow]")
        elif kind == "warning":
            console.print(f"[yellow]warning:[/yellow] {shown(info['message'])}", soft_wrap=True)
