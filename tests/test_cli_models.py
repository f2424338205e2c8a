"""`sinsr convert`, `sinsr models`, `sinsr --version` through the real Typer app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_zoo
from typer.testing import CliRunner

from sinsr_cli import __version__
from sinsr_cli.cli.app import app
from sinsr_cli.config import tiny_unet
from sinsr_cli.models.checkpoints import read_checkpoint
from sinsr_cli.models.swin_unet import SwinUNet

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("upscale", "bench", "distill", "models", "download", "convert"):
        assert cmd in r.output
    assert "--install-completion" in r.output  # Typer's shell completion is on


def test_start_up_commands_do_not_import_torch(tmp_path):
    """`--help`, `--version` and `sinsr models` stay fast because torch (seconds to import) is
    only imported by the commands that run a model: checked in a fresh interpreter."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from sinsr_cli.cli.app import app\n"
        "for args in (['--help'], ['--version'], ['models'], ['models', '--json'], ['upscale', '--help'],\n"
        "             ['bench', '--help'], ['distill', '--help'], ['download', '--help'], ['convert', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, (args, r.output)\n"
        "import sinsr_cli\n"
        "assert sinsr_cli.__version__\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    env = {"SINSR_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_lazy_public_api():
    import sinsr_cli
    from sinsr_cli.pipeline import SRPipeline, load_pipeline

    assert sinsr_cli.load_pipeline is load_pipeline and sinsr_cli.SRPipeline is SRPipeline
    assert callable(sinsr_cli.upscale)
    try:
        sinsr_cli.nope  # noqa: B018
    except AttributeError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_convert_official_style_pth(tmp_path):
    sd = {f"module.{k}": v for k, v in SwinUNet(tiny_unet()).state_dict().items()}
    torch.save({"params_ema": sd}, tmp_path / "SinSR_tiny.pth")
    dst = tmp_path / "out.safetensors"
    r = runner.invoke(app, ["convert", str(tmp_path / "SinSR_tiny.pth"), str(dst)])
    assert r.exit_code == 0, r.output
    ck = read_checkpoint(dst)
    assert ck.metadata["sinsr.kind"] == "unet" and "sinsr.preset" in ck.metadata
    # never overwrite without --force; wrong suffix; missing source: one line, exit 2
    for args in (
        [str(tmp_path / "SinSR_tiny.pth"), str(dst)],
        [str(tmp_path / "SinSR_tiny.pth"), str(tmp_path / "x.pth")],
        [str(tmp_path / "nope.pth"), str(tmp_path / "y.safetensors")],
    ):
        r = runner.invoke(app, ["convert", *args])
        assert r.exit_code == 2
        assert "error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "SinSR_tiny.pth"), str(dst), "--force"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["convert", str(tmp_path / "SinSR_tiny.pth"), str(dst), "--force", "-q"])
    assert r.exit_code == 0 and r.output == ""  # -q: errors only
    umask = os.umask(0o022)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask


def test_quiet_means_errors_only_in_every_command():
    from sinsr_cli.cli.common import QUIET_HELP

    for cmd in ("upscale", "bench", "distill", "download", "export", "convert"):
        r = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert "-q" in r.output and QUIET_HELP.split(":")[0] in r.output, cmd
        assert "<bool>" not in r.output, cmd


def test_convert_with_config_sidecar(tmp_path, reference_dir):
    """A non-preset architecture described by an official-style JSON sidecar."""
    import json

    from safetensors.torch import load_file

    from sinsr_cli.models.checkpoints import split_prefixed

    T = load_file(str(reference_dir / "parity_small.safetensors"))
    torch.save(split_prefixed(T, "unet."), tmp_path / "small.pth")
    r = runner.invoke(
        app, ["convert", str(tmp_path / "small.pth"), str(tmp_path / "small.safetensors"),
              "--config", str(reference_dir / "parity_small.json")]
    )
    assert r.exit_code == 0, r.output
    meta = json.loads(read_checkpoint(tmp_path / "small.safetensors").metadata["sinsr.preset"])
    assert meta["unet"]["model_channels"] == 32 and meta["unet"]["num_res_blocks"] == [1, 1, 1, 1]


def _tiny_pair_and_config(tmp_path):
    """An official-style student .pth, a VQ .pth and their YAML (architecture from shapes)."""
    import yaml

    from sinsr_cli.config import tiny_vq
    from sinsr_cli.models.vq_f4 import VQModel

    torch.manual_seed(0)
    torch.save(SwinUNet(tiny_unet()).state_dict(), tmp_path / "my_sinsr.pth")
    torch.save(VQModel(tiny_vq()).state_dict(), tmp_path / "vq.pth")
    cfg = {"diffusion": {"params": {"sf": 4, "steps": 15, "kappa": 2.0, "min_noise_level": 0.04}},
           "model": {"params": {
               "image_size": 64, "in_channels": 6, "model_channels": 32, "out_channels": 3, "num_res_blocks": [1, 1],
               "attention_resolutions": [64, 32], "channel_mult": [1, 2], "num_head_channels": 16,
               "use_scale_shift_norm": True, "swin_embed_dim": 32, "window_size": 8, "mlp_ratio": 2}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    del cfg["model"]["params"]["in_channels"]
    (tmp_path / "no_inch.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "my_sinsr.pth", tmp_path / "vq.pth"


def test_config_errors_and_the_one_step_rule_are_usage_errors(tmp_path):
    """`--config` on a student still refuses --steps 4, and a config missing a key is one line
    naming the file and key, exit 2 (no KeyError), in `upscale` and in `convert`."""
    from PIL import Image

    unet, vq = _tiny_pair_and_config(tmp_path)
    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    base = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", str(unet), "--vq", str(vq),
            "--device", "cpu", "-q"]
    r = runner.invoke(app, [*base, "--config", str(tmp_path / "c.yaml"), "--steps", "4"])
    assert r.exit_code == 2 and "one-step student" in r.output and not (tmp_path / "out.png").exists(), r.output
    want = f"{tmp_path / 'no_inch.yaml'}: model.params: 'in_channels' is missing"
    r = runner.invoke(app, [*base, "--config", str(tmp_path / "no_inch.yaml")])
    assert r.exit_code == 2 and want in r.output and "KeyError" not in r.output, r.output
    r = runner.invoke(app, ["convert", str(unet), str(tmp_path / "u.safetensors"), "--config", str(tmp_path / "no_inch.yaml")])
    assert r.exit_code == 2 and want in r.output and not (tmp_path / "u.safetensors").exists(), r.output
    r = runner.invoke(app, ["convert", str(unet), str(tmp_path / "u.safetensors"), "--config", str(tmp_path / "c.yaml")])
    assert r.exit_code == 0, r.output
    assert json.loads(read_checkpoint(tmp_path / "u.safetensors").metadata["sinsr.preset"])["one_step"] is True


def test_models_lists_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path))
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    for name in ("sinsr-v1", "resshift-v3", "vq-f4"):
        assert name in r.output
    assert "non-commercial" in r.output
    assert "size" in r.output and "preset" not in r.output  # preset == name: no column for it
    assert str(tmp_path / "models") in r.output.replace("\n", "")


def test_models_json_shows_size_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    f = tmp_path / "models" / "vq-f4.safetensors"
    f.write_bytes(b"x" * 1000)
    (tmp_path / "models" / "vq-f4.json").write_text(json.dumps({"sha256": "0" * 64, "size": 1000}))
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["cache"] == str(tmp_path / "models")
    rows = {m["name"]: m for m in doc["models"]}
    assert rows["vq-f4"]["cached"] is True and rows["vq-f4"]["size"] == 1000 and rows["vq-f4"]["path"] == str(f)
    assert rows["sinsr-v1"]["cached"] is False and rows["sinsr-v1"]["size"] is None
    assert all("preset" not in m for m in doc["models"])


def test_download_offline_without_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path))
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    r = runner.invoke(app, ["download", "sinsr-v1"])
    assert r.exit_code == 1  # a failed run, not a usage error
    assert "Traceback" not in r.output and "sinsr-v1" in r.output
    r = runner.invoke(app, ["download", "sinsr-v9"])
    assert r.exit_code == 2 and "unknown model" in r.output
    r = runner.invoke(app, ["download", "SinSR_v1"])
    assert r.exit_code == 2 and r.output.startswith("error: unknown model 'SinSR_v1' (did you mean 'sinsr-v1'?); known")


def test_upscale_first_run_offline_is_one_line_exit_1(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("SINSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "photo.png")])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sinsr-v1 is not in the cache and offline")
    assert "`sinsr download sinsr-v1`" in lines[0]
    assert str(tmp_path / "cache" / "incoming" / "SinSR_v1.pth") in lines[0]
    assert not (tmp_path / "photo_x4.png").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_run_without_network_fails_fast_in_one_line(tmp_path):
    """A fresh machine, no network (every connection refused), a Hub mirror configured: one
    line, exit 1, no library retry chatter. The bound is generous (the retry loop it guards
    against takes ~25 s); this is not a benchmark."""
    import os
    import time

    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith(("SINSR_", "HF_"))}
    env.update(SINSR_CACHE=str(tmp_path / "cache"), SINSR_HUB_REPO="someone/sinsr-mirror", HTTPS_PROXY=proxy,
               HTTP_PROXY=proxy, https_proxy=proxy, http_proxy=proxy)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sinsr_cli", "download", "sinsr-v1"], cwd=Path(__file__).resolve().parents[1],
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: sinsr-v1 is not in the cache and could not be downloaded (Hub someone/sinsr-mirror")
    assert "cannot connect" in lines[0] and "`sinsr download sinsr-v1`" in lines[0]
    assert lines[0].endswith(f"save it as {tmp_path / 'cache' / 'incoming' / 'SinSR_v1.pth'}")
    assert "Retry" not in proc.stderr + proc.stdout
    assert elapsed < 20, f"{elapsed:.1f} s: a retry loop? (huggingface_hub's back-off alone sleeps 23 s)"


def test_models_verify_and_export(tmp_path, monkeypatch, tiny_checkpoints):
    """A model put in the cache by hand is adopted; --verify checks it; export writes a mirror."""
    import shutil

    monkeypatch.setenv("SINSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    tiny_zoo(monkeypatch)
    (tmp_path / "cache" / "models").mkdir(parents=True)
    cached = tmp_path / "cache" / "models" / "vq-f4.safetensors"
    shutil.copyfile(tiny_checkpoints[1], cached)
    r = runner.invoke(app, ["export", str(tmp_path / "mirror"), "vq-f4"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mirror" / "vq_f4.safetensors").is_file() and "SINSR_HUB_REPO" in r.output
    sums = (tmp_path / "mirror" / "SHA256SUMS").read_text().split()
    r = runner.invoke(app, ["models", "--verify", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert rows["vq-f4"]["verified"] is True and rows["sinsr-v1"]["verified"] is None
    assert sums == [json.loads((tmp_path / "cache" / "models" / "vq-f4.json").read_text())["sha256"], "vq_f4.safetensors"]
    r = runner.invoke(app, ["export", str(tmp_path / "mirror"), "vq-f4"])
    assert r.exit_code == 2 and "already exists" in r.output
    mine = tmp_path / "my-notes.md"  # --force replaces a link in the folder, never the file it points to
    mine.write_text("my own notes")
    (tmp_path / "mirror" / "README.md").unlink()
    (tmp_path / "mirror" / "README.md").symlink_to(mine)
    r = runner.invoke(app, ["export", str(tmp_path / "mirror"), "vq-f4", "--force"])
    assert r.exit_code == 0, r.output
    assert mine.read_text() == "my own notes" and not (tmp_path / "mirror" / "README.md").is_symlink()
    assert "sinsr weights mirror" in (tmp_path / "mirror" / "README.md").read_text()
    for where, reason in ((mine, "is a file, not a folder"), (mine / "sub", "a parent path is a file")):
        r = runner.invoke(app, ["export", str(where), "vq-f4"])
        assert r.exit_code == 2 and r.output.startswith(f"error: {where}: {reason}"), r.output
    r = runner.invoke(app, ["export", str(tmp_path / "m2"), "sinsr-v1"])
    assert r.exit_code == 1 and "sinsr-v1 is not in the cache" in r.output

    data = bytearray(cached.read_bytes())  # a rewrite that keeps the size: caught by --verify
    data[-3] ^= 0xFF
    cached.write_bytes(bytes(data))
    r = runner.invoke(app, ["models", "--verify"])
    assert r.exit_code == 1 and "vq-f4: the cached file failed sha256 verification" in r.output
    assert not cached.exists()


def test_help_paragraphs_reflow_to_the_terminal():
    """A command's help paragraphs wrap at the terminal's width, not at the docstring's breaks."""
    r = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "200"})
    assert "A file is an image when its name or its content says so" in r.output
    narrow = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "80"})
    lines = [ln.strip() for ln in narrow.output.splitlines()]
    start = lines.index(next(ln for ln in lines if ln.startswith("Inputs are files")))
    paragraph = lines[start : lines.index("", start)]
    assert all(len(ln) > 60 for ln in paragraph[:-1]), paragraph  # no ragged half-empty lines


def test_usage_errors_are_one_error_line():
    """A wrong-typed value, a missing argument, an unknown command or option: one `error:` line
    and exit 2, like every other error (no Typer panel)."""
    for args, words in (
        (["upscale", "x.png", "--quality", "abc"], "--quality"),
        (["upscale", "x.png", "--dtype"], "--dtype"),
        (["convert"], "Missing argument"),
        (["upscal", "x.png"], "Did you mean 'upscale'?"),
        (["--bogus"], "--bogus"),
    ):
        r = runner.invoke(app, args)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, (args, r.output)
        assert lines[0].startswith("error: ") and words in lines[0], (args, r.output)
