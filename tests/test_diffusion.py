"""Schedule and samplers with a dummy denoiser (no weights needed)."""

from __future__ import annotations

import json

import pytest
import torch

from sinsr_cli.config import PRESETS
from sinsr_cli.diffusion.sampler import (
    SAMPLERS,
    get_sampler,
    predict_x0,
    prior_sample,
    sample_ancestral,
    sample_deterministic,
    sample_onestep,
)
from sinsr_cli.diffusion.schedule import make_schedule, respace


@pytest.mark.parametrize("key,preset", [("sinsr_and_resshift_v1_T15", "sinsr-v1"), ("resshift_v3_T4", "resshift-v3")])
def test_sqrt_etas_equal_official(reference_dir, key, preset):
    ref = json.loads((reference_dir / "architecture.json").read_text())["diffusion"][key]
    s = make_schedule(PRESETS[preset].schedule)
    assert s.sqrt_etas.dtype == torch.float64
    assert (s.sqrt_etas - torch.tensor(ref["sqrt_etas"], dtype=torch.float64)).abs().max() <= 1e-12
    div = ref["ddim_coefficients_float32"]["scale_input_divisor"]
    for i, d in enumerate(div):
        assert abs(s.input_divisor(i).item() - d) <= 2.5e-7  # one float32 ulp
    if "k" in ref["ddim_coefficients_float32"]:
        c = ref["ddim_coefficients_float32"]
        for i in range(s.num_steps):
            k, m, j = s.ddim(i)
            # float32 arithmetic: bitwise on the reference host, within ~10 ulp on others (the
            # vectorised float32 sqrt/pow round differently on AMD Zen 4 than on the Intel host)
            for ours, theirs in zip((k.item(), m.item(), j.item()), (c["k"][i], c["m"][i], c["j"][i])):
                assert ours == pytest.approx(theirs, rel=2e-6, abs=1e-12)


def test_v3_schedule_differs_from_sinsr_formula():
    v3 = make_schedule(PRESETS["resshift-v3"].schedule)
    assert abs(v3.sqrt_etas[0].item() - 0.1) < 1e-12


def test_respacing_follows_official_space_timesteps():
    s = make_schedule(PRESETS["sinsr-v1"].schedule)
    r = respace(s, 4)
    assert r.timestep_map.tolist() == [0, 3, 7, 11]
    torch.testing.assert_close(r.sqrt_etas, s.sqrt_etas[[0, 3, 7, 11]])
    assert respace(s, 15) is s
    with pytest.raises(ValueError):
        respace(s, 16)


class Recorder:
    """A denoiser that returns a fixed affine function of its input and logs its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return 0.5 * x + 0.01 * t[:, None, None, None].float()


def test_onestep_equals_first_deterministic_x0():
    s = make_schedule(PRESETS["sinsr-v1"].schedule)
    g = torch.Generator().manual_seed(0)
    z_y, noise = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    one = sample_onestep(Recorder(), z_y, s, noise)
    first = []
    sample_deterministic(Recorder(), z_y, s, noise, callback=lambda k, n, x0, z: first.append(x0) if k == 0 else None)
    torch.testing.assert_close(one, first[0])
    rec = Recorder()
    sample_onestep(rec, z_y, s, noise)
    (x_in, t), = rec.calls
    assert t.tolist() == [14, 14]
    torch.testing.assert_close(x_in, prior_sample(z_y, s, noise) / s.input_divisor(14))


def test_deterministic_is_a_function_of_noise_and_ends_on_x0():
    s = make_schedule(PRESETS["sinsr-v1"].schedule)
    z_y, noise = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    last = []
    a = sample_deterministic(Recorder(), z_y, s, noise, callback=lambda k, n, x0, z: last.append((x0, z)))
    b = sample_deterministic(Recorder(), z_y, s, noise)
    assert torch.equal(a, b) and len(last) == 15
    torch.testing.assert_close(last[-1][0], last[-1][1])  # k=1, m=j=0 at t=0


def test_ancestral_uses_generator_and_injected_noise():
    s = make_schedule(PRESETS["resshift-v3"].schedule)
    z_y, noise = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    a = sample_ancestral(Recorder(), z_y, s, noise, torch.Generator().manual_seed(1))
    b = sample_ancestral(Recorder(), z_y, s, noise, torch.Generator().manual_seed(1))
    c = sample_ancestral(Recorder(), z_y, s, noise, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    zeros = [torch.zeros_like(noise)] * 4
    d = sample_ancestral(Recorder(), z_y, s, noise, step_noises=zeros)
    # with zero step noise the chain is the posterior-mean chain
    z = prior_sample(z_y, s, noise)
    for i in reversed(range(4)):
        x0 = predict_x0(Recorder(), z, s, i)
        c1, c2, _ = s.posterior(i)
        z = c1 * z + c2 * x0
    torch.testing.assert_close(d, z)


def test_samplers_share_one_signature_in_one_table():
    """Every sampler takes ``(denoiser, z_y, schedule, noise, generator, callback)``; choosing one
    is a lookup, and an unknown name says what exists."""
    s = respace(make_schedule(PRESETS["resshift-v1"].schedule), 3)
    z_y, noise = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    assert set(SAMPLERS) == {"onestep", "ancestral", "deterministic"}
    for name, fn in SAMPLERS.items():
        seen = []
        z0 = get_sampler(name)(Recorder(), z_y, s, noise, torch.Generator().manual_seed(0), lambda k, n, x0, z: seen.append(n))
        assert fn is get_sampler(name) and z0.shape == z_y.shape and z0.dtype == torch.float32
        assert seen == ([1] if name == "onestep" else [3] * 3)
    with pytest.raises(ValueError, match="unknown sampler 'euler' \\(choose from onestep, ancestral, deterministic\\)"):
        get_sampler("euler")


def test_step_table_holds_the_scalar_coefficients_bitwise():
    """Samplers read per-device tables (no host->device copy per step); values are the
    schedule's own float32 scalars, bit for bit."""
    for s in (make_schedule(PRESETS["sinsr-v1"].schedule), respace(make_schedule(PRESETS["sinsr-v1"].schedule), 4)):
        tab = s.on("cpu")
        assert s.on(torch.device("cpu")) is tab  # made once per device
        assert torch.equal(tab.prior_std, s.prior_std()) and torch.equal(tab.timesteps, s.timestep_map)
        for i in range(s.num_steps):
            assert torch.equal(tab.input_divisor[i], s.input_divisor(i))
            assert torch.equal(tab.posterior[i], torch.stack(s.posterior(i)))
            assert torch.equal(tab.ddim[i], torch.stack(s.ddim(i)))
