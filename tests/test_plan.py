"""The run plan: the one place steps, sampler, seed and tile settings are checked and resolved."""

from __future__ import annotations

import dataclasses

import pytest

from sinsr_cli.cli.common import flag_message
from sinsr_cli.config import DEFAULT_SEED, PRESETS, tiny_preset
from sinsr_cli.errors import SettingError
from sinsr_cli.plan import OneStepOnly, Plan, Tiling, check_settings, make_plan, resolve_sampling, resolve_seed


def test_seeds_are_made_in_one_place():
    assert resolve_seed(None) == DEFAULT_SEED == 12345
    assert resolve_seed(7) == resolve_seed("7") == resolve_seed(" 7 ") == 7
    fresh = {resolve_seed("random") for _ in range(4)}
    assert len(fresh) > 1 and all(0 <= s < 2**31 for s in fresh)
    for bad in ("lucky", -1, 2**63, 1.5, True):
        with pytest.raises(SettingError) as info:
            resolve_seed(bad)
        assert info.value.setting == "seed"


def test_sampling_follows_the_preset():
    teacher = PRESETS["resshift-v1"]
    assert resolve_sampling(teacher) == (15, "ancestral")
    assert resolve_sampling(teacher, 4) == (4, "ancestral")
    assert resolve_sampling(teacher, 4, "deterministic") == (4, "deterministic")
    assert resolve_sampling(teacher, 1, "ancestral") == (1, "onestep")
    assert resolve_sampling(PRESETS["resshift-v3"]) == (4, "ancestral")
    assert resolve_sampling(tiny_preset()) == (1, "onestep")  # a one-step default
    assert resolve_sampling(tiny_preset(), 3) == (3, "ancestral")
    for steps, sampler, setting in ((0, None, "steps"), (16, None, "steps"), (4, "euler", "sampler"), (4, "onestep", "sampler")):
        with pytest.raises(SettingError) as info:
            resolve_sampling(teacher, steps, sampler)
        assert info.value.setting == setting and "--" not in str(info.value)


def test_one_step_students_refuse_other_samplings():
    student = PRESETS["sinsr-v1"]
    assert resolve_sampling(student) == resolve_sampling(student, 1, "onestep") == (1, "onestep")
    with pytest.raises(OneStepOnly, match="sinsr-v1 is a one-step student: it takes exactly 1 step, not 4") as info:
        resolve_sampling(student, 4)
    assert info.value.setting == "steps"
    with pytest.raises(OneStepOnly) as info:
        resolve_sampling(student, None, "ancestral")
    assert info.value.setting == "sampler"


def test_a_plan_is_frozen_and_resolved():
    plan = make_plan(PRESETS["resshift-v2"], steps=None, seed="3", tiling=Tiling(tile=None, batch=2))
    assert plan == Plan(steps=15, sampler="ancestral", seed=3, tiling=Tiling(None, 32, 8, 2))
    assert plan.tiling.auto
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kw, setting",
    [(dict(tile=-1), "tile"), (dict(tile=15), "tile"), (dict(overlap=-1), "tile_overlap"),
     (dict(pad=-1), "tile_pad"), (dict(batch=0), "tile_batch"), (dict(tile="64"), "tile")],
)
def test_tiling_is_checked_on_construction(kw, setting):
    with pytest.raises(SettingError) as info:
        Tiling(**kw)
    assert info.value.setting == setting
    assert Tiling(tile=16).tile == 16 and Tiling(tile=0).tile == 0 and Tiling(tile=None).auto


def test_the_cli_puts_its_flags_in_place_of_setting_names():
    with pytest.raises(SettingError) as info:
        check_settings(steps=0)
    assert flag_message(info.value) == "--steps must be >= 1, got 0"
    with pytest.raises(SettingError) as info:
        Tiling(batch=0)
    assert flag_message(info.value) == "--batch must be >= 1, got 0"
    with pytest.raises(SettingError) as info:
        resolve_sampling(PRESETS["sinsr-v2"], 2)
    assert flag_message(info.value).startswith("--steps: sinsr-v2 is a one-step student")


def test_the_cli_respells_the_settings_a_message_mentions():
    """Library messages name settings (``amp``, ``crop_mode``, ``model``); the CLI shows flags,
    but never inside a path or a longer word."""
    import pickle

    from sinsr_cli.distill.config import DistillConfig
    from sinsr_cli.distill.trainer import TrainingDiverged
    from sinsr_cli.models.checkpoints import CheckpointError

    with pytest.raises(SettingError) as info:
        DistillConfig(data=None, pairs=None)
    assert "--" not in str(info.value)
    assert flag_message(info.value) == "give exactly one of --data (HR images) or --pairs (lr/ + hr/ folders)"
    with pytest.raises(SettingError) as info:
        DistillConfig(data="hr", crop_mode="odd")
    assert flag_message(info.value).startswith("unknown --crop-mode 'odd' (use ")
    with pytest.raises(SettingError) as info:
        DistillConfig(data="hr", crop=30)
    assert flag_message(info.value) == "--crop must be a multiple of 4 and at least 32, got 30"
    err = pickle.loads(pickle.dumps(CheckpointError("/x/model/model.pth: not a UNet (model)", ("model",))))
    assert flag_message(err) == "/x/model/model.pth: not a UNet (--model)"
    text = flag_message(TrainingDiverged("3 non-finite steps; lower lr, enable clip_grad or use amp bf16/no."))
    assert text == "3 non-finite steps; lower --lr, enable --clip-grad or use --amp bf16/no."
    assert flag_message(ValueError("plain")) == "plain"


def test_numpy_integer_seeds_and_case_insensitive_samplers_listed_in_full():
    import numpy as np

    from sinsr_cli.plan import resolve_seed, sampler_name

    assert resolve_seed(np.int64(3)) == 3 and type(resolve_seed(np.int32(7))) is int
    assert sampler_name(" ANCESTRAL ") == "ancestral" and sampler_name("OneStep") == "onestep"
    with pytest.raises(SettingError, match="onestep, ancestral, deterministic"):
        sampler_name("euler")
    with pytest.raises(SettingError, match="seed"):
        resolve_seed(np.float64(3.0))
