"""`--dtype auto` follows the CPU's bf16 support; the flag reader and the override."""

from __future__ import annotations

import torch

from sinsr_cli.devices import BF16_ENV, cpu_flags, cpu_has_native_bf16, resolve_dtype

CPU = torch.device("cpu")


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n\nflags\t: other\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "amx_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_picks_bf16_only_with_native_bf16(monkeypatch):
    monkeypatch.delenv(BF16_ENV, raising=False)
    assert cpu_has_native_bf16(frozenset({"avx512f", "amx_bf16"}))
    assert cpu_has_native_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert not cpu_has_native_bf16(frozenset({"avx512f", "avx2"}))
    assert not cpu_has_native_bf16(frozenset())
    import sinsr_cli.devices as devices

    for flags, want in ((frozenset({"amx_bf16"}), torch.bfloat16), (frozenset({"avx2"}), torch.float32)):
        monkeypatch.setattr(devices, "cpu_flags", lambda *a, f=flags: f)
        assert resolve_dtype("auto", CPU) == want
        assert resolve_dtype(None, CPU) == want
        assert resolve_dtype("fp32", CPU) == torch.float32  # explicit names are never changed
    assert resolve_dtype("auto", torch.device("meta")) == torch.float32


def test_env_overrides_detection(monkeypatch):
    monkeypatch.setenv(BF16_ENV, "1")
    assert cpu_has_native_bf16(frozenset()) and resolve_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setenv(BF16_ENV, "0")
    assert not cpu_has_native_bf16(frozenset({"amx_bf16"})) and resolve_dtype("auto", CPU) == torch.float32
