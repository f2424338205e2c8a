"""Checkpoint reading, canonicalisation, detection, strict loading, conversion."""

from __future__ import annotations

import json

import pytest
import torch

from sinsr_cli.config import PRESETS, VQ_PRESETS, tiny_preset, tiny_unet, tiny_vq
from sinsr_cli.models.checkpoints import CheckpointError, canonicalize, detect_kind, load_strict, read_checkpoint, vq_metadata, write_safetensors
from sinsr_cli.models.convert import convert_checkpoint, read_config_file
from sinsr_cli.models.detect import detect_preset, infer_unet_config, infer_vq_config
from sinsr_cli.models.swin_unet import SwinUNet
from sinsr_cli.models.vq_f4 import VQModel
from sinsr_cli.weights import load_unet, load_vq


def _sd(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "step": 3},
        lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()},
    ],
)
def test_canonicalize_unwraps_and_strips(wrap):
    sd = _sd(SwinUNet(tiny_unet()))
    out = canonicalize(wrap(sd))
    assert out.keys() == sd.keys()
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_mixed_prefixes_are_stripped_per_key():
    sd = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert set(canonicalize(sd)) == {"a", "b"}


def test_pth_roundtrip_with_module_prefix_loads_strictly(tmp_path):
    torch.manual_seed(0)
    unet = SwinUNet(tiny_unet())
    torch.save({f"module.{k}": v for k, v in unet.state_dict().items()}, tmp_path / "SinSR_tiny.pth")
    ckpt = read_checkpoint(tmp_path / "SinSR_tiny.pth")
    other = SwinUNet(tiny_unet())
    load_strict(other, ckpt.state_dict)
    x, lq, t = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), torch.tensor([5])
    with torch.no_grad():
        torch.testing.assert_close(other(x, t, lq), unet(x, t, lq))


def test_strict_load_error_is_one_line_naming_keys():
    sd = _sd(SwinUNet(tiny_unet()))
    sd.pop("out.2.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_strict(SwinUNet(tiny_unet()), sd, "x.pth")
    msg = str(e.value)
    assert "\n" not in msg and "out.2.bias" in msg and "extra.weight" in msg


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all" * 10)
    for name in ("empty.pth", "junk.pth", "missing.pth"):
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "evil.pth")


def test_a_refused_pickle_says_why_without_torch_paragraph_or_warning(tmp_path):
    """A plain pickle (protocol 4, not torch's) gives the unpickler's reason, not torch's text on
    its 2.6 default cut off mid-sentence, and no UserWarning on the way."""
    import pickle
    import warnings

    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(tmp_path / "plain.pth")
    msg = str(e.value)
    assert "safe loader refused it: Unsupported operand" in msg and "PyTorch 2.6" not in msg


def test_files_that_are_no_checkpoint_are_named_so(tmp_path):
    """Text, an image or a folder where a checkpoint should be: one line saying what it is, not
    torch's unpickler error (``(101)``) nor its paragraph on the 2.6 default."""
    from PIL import Image

    from sinsr_cli.distill.state import read_checkpoint_state
    from sinsr_cli.weights import load_unet

    (tmp_path / "text.pth").write_text("hello")
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "folder").mkdir()
    for path in (tmp_path / "text.pth", tmp_path / "x.png"):
        with pytest.raises(CheckpointError, match="neither a torch file nor safetensors"):
            read_checkpoint(path)
        with pytest.raises(CheckpointError, match="not a training checkpoint .neither a torch file"):
            read_checkpoint_state(path)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        read_checkpoint(tmp_path / "folder")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_unet(tmp_path / "folder")
    vq = write_safetensors(_sd(VQModel(tiny_vq())), tmp_path / "vq.safetensors", vq_metadata(tiny_vq()))
    with pytest.raises(CheckpointError, match=r"not a UNet \(teacher\)") as e:
        load_unet(vq, setting="teacher")
    assert e.value.mentions == ("teacher",)


def test_infer_configs_from_shapes():
    assert infer_unet_config(_sd(SwinUNet(tiny_unet()))) == tiny_unet()
    assert infer_vq_config(_sd(VQModel(tiny_vq()))) == tiny_vq()
    with torch.device("meta"):
        full = SwinUNet(PRESETS["sinsr-v1"].unet).state_dict()
        vq = VQModel(VQ_PRESETS["vq-f4"]).state_dict()
    assert infer_unet_config(full) == PRESETS["sinsr-v1"].unet
    assert infer_vq_config(vq) == VQ_PRESETS["vq-f4"]
    assert detect_kind(full) == "unet" and detect_kind(vq) == "vq"


@pytest.mark.parametrize(
    "name,preset",
    [
        ("SinSR_v1.pth", "sinsr-v1"),
        ("resshift_realsrx4_s15_v1.pth", "resshift-v1"),
        ("resshift_realsrx4_s4_v3.pth", "resshift-v3"),
    ],
)
def test_detect_preset_from_official_file_names(tmp_path, name, preset):
    with torch.device("meta"):
        sd = SwinUNet(PRESETS["sinsr-v1"].unet).state_dict()
    from sinsr_cli.models.checkpoints import Checkpoint

    got = detect_preset(Checkpoint(sd, {}, tmp_path / name))
    assert got.name == preset and got.schedule == PRESETS[preset].schedule


def test_another_size_of_a_preset_keeps_its_sampling_rules(tmp_path):
    """A SinSR-style file of a size no preset has is still a one-step student (other step
    counts refused); a ResShift one keeps the teacher's steps and sampler."""
    from sinsr_cli.models.checkpoints import Checkpoint
    from sinsr_cli.plan import make_plan
    from sinsr_cli.errors import SettingError

    sd = _sd(SwinUNet(tiny_unet()))
    student = detect_preset(Checkpoint(sd, {}, tmp_path / "my_sinsr.pth"))
    assert student.name == "custom-sinsr-v1" and student.unet == tiny_unet()
    assert student.one_step and student.default_steps == 1 and student.schedule == PRESETS["sinsr-v1"].schedule
    with pytest.raises(SettingError):
        make_plan(student, steps=4)
    teacher = detect_preset(Checkpoint(sd, {}, tmp_path / "resshift_realsrx4_s4_v3.pth"))
    assert teacher.name == "custom-resshift-v3" and not teacher.one_step
    assert (teacher.default_steps, teacher.default_sampler) == (PRESETS["resshift-v3"].default_steps, PRESETS["resshift-v3"].default_sampler)
    assert make_plan(teacher, steps=2).steps == 2


def test_convert_writes_self_describing_safetensors(tmp_path):
    torch.manual_seed(0)
    unet, vq = SwinUNet(tiny_unet()), VQModel(tiny_vq())
    torch.save({"state_dict": unet.state_dict()}, tmp_path / "student.pth")
    torch.save(vq.state_dict(), tmp_path / "vq.pth")
    u = convert_checkpoint(tmp_path / "student.pth", tmp_path / "student.safetensors")
    v = convert_checkpoint(tmp_path / "vq.pth", tmp_path / "vq.safetensors")
    cu, cv = read_checkpoint(u), read_checkpoint(v)
    assert cu.metadata["sinsr.kind"] == "unet" and cv.metadata["sinsr.kind"] == "vq"
    assert json.loads(cu.metadata["sinsr.preset"])["unet"]["model_channels"] == 32
    model, preset = load_unet(u)
    assert preset.unet == tiny_unet()
    assert all(torch.equal(model.state_dict()[k], unet.state_dict()[k]) for k in unet.state_dict())
    assert load_vq(v).cfg == tiny_vq()
    with pytest.raises(CheckpointError, match="not a UNet"):
        load_unet(v)


def test_config_file_sidecar_and_yaml(tmp_path, reference_dir):
    side = read_config_file(reference_dir / "parity_small.json")
    assert side.unet.model_channels == 32 and side.vq.n_embed == 32 and side.schedule.steps == 15
    y = tmp_path / "cfg.yaml"
    y.write_text(
        "model:\n  params:\n    image_size: 64\n    in_channels: 6\n    model_channels: 32\n"
        "    out_channels: 3\n    num_res_blocks: [1, 1]\n    attention_resolutions: [64, 32]\n"
        "    channel_mult: [1, 2]\n    num_head_channels: 16\n    use_scale_shift_norm: true\n"
        "    swin_embed_dim: 32\n    window_size: 8\n    mlp_ratio: 2\n"
    )
    cfg = read_config_file(y)
    assert cfg.unet == tiny_unet() and cfg.vq is None and cfg.schedule is None


_LOAD_IN_FRESH_PROCESS = r"""
import sys, torch
from sinsr_cli.weights import load_unet, load_vq
unet, _ = load_unet(sys.argv[1])
vq = load_vq(sys.argv[2])
want = torch.load(sys.argv[3])
got = {**{"unet." + k: v for k, v in unet.state_dict().items()}, **{"vq." + k: v for k, v in vq.state_dict().items()}}
assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
heavy = [m for m in ("sympy", "torch.fx.experimental.symbolic_shapes", "torch._dynamo") if m in sys.modules]
print(",".join(heavy) or "none")
"""


def test_loading_builds_on_cpu_without_importing_torch_tracing_machinery(tmp_path):
    """Every start-up loads the models: built straight on the CPU (no meta device and
    ``to_empty``, whose Python references import sympy and torch.fx's symbolic shapes, 0.4 s),
    with every parameter and buffer equal to the file's."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    torch.manual_seed(0)
    unet, vq = SwinUNet(tiny_unet()), VQModel(tiny_vq())
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp_path / "u.safetensors")
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, tmp_path / "v.safetensors")
    both = {**{"unet." + k: v for k, v in unet.state_dict().items()}, **{"vq." + k: v for k, v in vq.state_dict().items()}}
    torch.save(both, tmp_path / "want.pt")
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, str(tmp_path / "u.safetensors"), str(tmp_path / "v.safetensors"),
         str(tmp_path / "want.pt")],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "none"


# -- config files (--config / config=) -------------------------------------------------------

_TINY_YAML = {
    "model": {"params": {
        "image_size": 64, "in_channels": 6, "model_channels": 32, "out_channels": 3, "num_res_blocks": [1, 1],
        "attention_resolutions": [64, 32], "channel_mult": [1, 2], "num_head_channels": 16,
        "use_scale_shift_norm": True, "swin_embed_dim": 32, "window_size": 8, "mlp_ratio": 2,
    }},
    "autoencoder": {"params": {"embed_dim": 3, "n_embed": 64, "ddconfig": {
        "z_channels": 3, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": []}}},
    "diffusion": {"params": {"sf": 4, "steps": 15, "kappa": 2.0, "min_noise_level": 0.04}},
}


def _yaml(tmp_path, name, edit=None):
    """The tiny models' official-style YAML, ``edit`` applied to a deep copy."""
    import copy

    import yaml

    data = copy.deepcopy(_TINY_YAML)
    if edit:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _official_unet(tmp_path, name):
    torch.manual_seed(0)
    torch.save(SwinUNet(tiny_unet()).state_dict(), tmp_path / name)
    return tmp_path / name


def test_a_config_keeps_a_students_one_step_rule(tmp_path):
    """A config describes architecture and schedule; being a one-step student is the
    checkpoint's, so --config neither lifts the rule nor writes one_step false into a file."""
    from sinsr_cli.plan import OneStepOnly, make_plan

    src, cfg = _official_unet(tmp_path, "my_sinsr.pth"), _yaml(tmp_path, "c.yaml")
    _, preset = load_unet(src, config=cfg)
    assert preset.name == "custom-my_sinsr" and preset.one_step and preset.default_steps == 1
    assert make_plan(preset).steps == 1
    with pytest.raises(OneStepOnly):
        make_plan(preset, steps=4)
    out = convert_checkpoint(src, tmp_path / "s.safetensors", config=cfg)
    assert json.loads(read_checkpoint(out).metadata["sinsr.preset"])["one_step"] is True
    assert load_unet(out)[1].one_step


def test_a_configs_schedule_sets_the_default_step_count(tmp_path):
    """A teacher's default steps are the config's T both ways (T=4 on a 15-step name, T=15 on
    an _s4 name), and a config with only diffusion.params applies its schedule."""
    from sinsr_cli.plan import make_plan

    t4 = _yaml(tmp_path, "t4.yaml", lambda d: d["diffusion"]["params"].update(steps=4, min_noise_level=0.2))
    _, preset = load_unet(_official_unet(tmp_path, "my_resshift.pth"), config=t4)
    assert preset.schedule.steps == 4 and make_plan(preset).steps == 4 and not preset.one_step
    _, preset = load_unet(_official_unet(tmp_path, "resshift_s4_x.pth"), config=_yaml(tmp_path, "t15.yaml"))
    assert preset.schedule.steps == 15 and make_plan(preset).steps == 15
    only = _yaml(tmp_path, "only.yaml", lambda d: [d.pop("model"), d.pop("autoencoder"),
                                                   d["diffusion"]["params"].update(steps=4, min_noise_level=0.2)])
    _, preset = load_unet(tmp_path / "my_resshift.pth", config=only)
    assert preset.unet == tiny_unet() and preset.schedule.min_noise_level == 0.2
    assert make_plan(preset).steps == 4


def _drop_in_channels(d):
    del d["model"]["params"]["in_channels"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (_drop_in_channels, "model.params: 'in_channels' is missing"),
        (lambda d: d["model"].update(params=None), "model.params is not a mapping"),
        (lambda d: d["model"]["params"].update(channel_mult=None), "model.params: 'channel_mult' has a bad value"),
        (lambda d: d["diffusion"]["params"].update(steps=0), "diffusion.params: steps must be an integer >= 1"),
        (lambda d: d["diffusion"]["params"].pop("kappa"), "diffusion.params: 'kappa' is missing"),
        (lambda d: d["autoencoder"]["params"].update(ddconfig=None), "autoencoder.params: 'ddconfig' has a bad value"),
        (lambda d: d["diffusion"]["params"].update(sf=2), "sf 2 (diffusion.params.sf) does not fit the VQ"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_file_and_key_at_load(tmp_path, edit, words):
    """Refused when the config is read (not at every image), as the error the CLI maps to exit 2."""
    src, cfg = _official_unet(tmp_path, "my_sinsr.pth"), _yaml(tmp_path, "bad.yaml", edit)
    for load in (lambda: load_unet(src, config=cfg), lambda: convert_checkpoint(src, tmp_path / "o.safetensors", config=cfg)):
        with pytest.raises(CheckpointError) as err:
            load()
        assert str(err.value).startswith(f"{cfg}: ") and words in str(err.value) and "\n" not in str(err.value)


def test_load_pipeline_refuses_a_scale_its_vq_cannot_do(tmp_path):
    """A diffusion-only config with sf 2 and a x4 VQ: refused at load, naming the config."""
    from sinsr_cli.models.checkpoints import vq_metadata
    from sinsr_cli.pipeline import load_pipeline

    torch.manual_seed(0)
    vq = write_safetensors(VQModel(tiny_vq()).state_dict(), tmp_path / "vq.safetensors", vq_metadata(tiny_vq()))
    cfg = _yaml(tmp_path, "sf2.yaml", lambda d: [d.pop("model"), d.pop("autoencoder"), d["diffusion"]["params"].update(sf=2)])
    with pytest.raises(CheckpointError, match=r"sf2\.yaml with .*vq\.safetensors: sf 2 .*downscales by 4"):
        load_pipeline(_official_unet(tmp_path, "my_resshift.pth"), vq, device="cpu", dtype="fp32", config=cfg)
