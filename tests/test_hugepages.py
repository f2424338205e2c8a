"""Huge-page CPU tensors: the environment rule, and that torch and the CLI really take it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinsr_cli.hugepages import ENV, THP_SYSFS, enable_huge_pages, thp_mode


def _sysfs(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "enabled"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, mode", [("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                                        ("always madvise [never]\n", "never"), ("garbage", None)])
def test_thp_mode_reads_the_bracketed_policy(tmp_path: Path, text: str, mode: str | None) -> None:
    assert thp_mode(_sysfs(tmp_path, text)) == mode


def test_thp_mode_without_thp_is_none(tmp_path: Path) -> None:
    assert thp_mode(tmp_path / "missing") is None


@pytest.mark.parametrize("policy", ["always [madvise] never", "[always] madvise never"])
def test_sets_the_variable_before_torch(tmp_path: Path, policy: str) -> None:
    env: dict[str, str] = {}
    assert enable_huge_pages(env, sysfs=_sysfs(tmp_path, policy), modules={}) is True
    assert env == {ENV: "1"}


def test_leaves_a_users_choice_alone(tmp_path: Path) -> None:
    on = _sysfs(tmp_path, "always [madvise] never")
    env = {ENV: "0"}
    assert enable_huge_pages(env, sysfs=on, modules={}) is False
    assert env == {ENV: "0"}
    env = {ENV: "1"}
    assert enable_huge_pages(env, sysfs=tmp_path / "missing", modules={}) is True
    assert env == {ENV: "1"}


def test_nothing_where_it_cannot_work(tmp_path: Path) -> None:
    for sysfs in (_sysfs(tmp_path, "always madvise [never]"), tmp_path / "missing"):
        env: dict[str, str] = {}
        assert enable_huge_pages(env, sysfs=sysfs, modules={}) is False
        assert env == {}
    env = {}
    assert enable_huge_pages(env, sysfs=_sysfs(tmp_path, "always [madvise] never"), modules={"torch": object()}) is False
    assert env == {}, "once torch is imported the variable would be read already: setting it would mislead"


_HUGE_KB = """
import sys
if sys.argv[1] == "on":
    from sinsr_cli.hugepages import enable_huge_pages
    assert enable_huge_pages()
import torch
x = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # touched: its pages are faulted in
print([int(ln.split()[1]) for ln in open("/proc/self/smaps_rollup") if ln.startswith("AnonHugePages")][0])
"""


def _huge_kb(which: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", _HUGE_KB, which], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(thp_mode(THP_SYSFS) in (None, "never") or not Path("/proc/self/smaps_rollup").exists(),
                    reason="no transparent huge pages on this kernel")
def test_torch_takes_it_when_set_before_import() -> None:
    assert _huge_kb("on") >= 32 << 10, "most of a touched 64 MiB tensor should sit in 2 MiB pages"
    if thp_mode(THP_SYSFS) == "madvise":  # under "always" every process gets them anyway
        assert _huge_kb("off") == 0


_CLI = """
import os, sys
import sinsr_cli.cli.app as app
assert "torch" not in sys.modules, "the CLI must not import torch before its entry point runs"
sys.argv = ["sinsr", "--version"]
try:
    app.main()
except SystemExit:
    pass
print(os.environ.get("THP_MEM_ALLOC_ENABLE"))
"""


def test_the_cli_entry_point_enables_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", _CLI], capture_output=True, text=True, env=env, check=True)
    expected = "None" if thp_mode(THP_SYSFS) in (None, "never") else "1"
    assert out.stdout.strip().splitlines()[-1] == expected


def test_a_second_call_after_import_torch_still_says_they_are_on(tmp_path: Path, monkeypatch) -> None:
    """Set before torch (by a first call, or in the starting environment), huge pages are in
    force: a later call after ``import torch`` says so instead of False."""
    import sinsr_cli.hugepages as hp

    on, startup = _sysfs(tmp_path, "always [madvise] never"), tmp_path / "environ"
    startup.write_bytes(b"PATH=/bin\0")
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(hp, "_enabled_before_torch", False)
    assert enable_huge_pages(os.environ, sysfs=on, modules={}, startup=startup) is True
    assert enable_huge_pages(os.environ, sysfs=on, modules={"torch": object()}, startup=startup) is True
    monkeypatch.setattr(hp, "_enabled_before_torch", False)  # a fresh process, variable set late
    assert enable_huge_pages(os.environ, sysfs=on, modules={"torch": object()}, startup=startup) is False
    startup.write_bytes(f"PATH=/bin\0{ENV}=1\0".encode())  # ... or set when the process started
    assert enable_huge_pages(os.environ, sysfs=on, modules={"torch": object()}, startup=startup) is True
    monkeypatch.setenv(ENV, "0")
    assert enable_huge_pages(os.environ, sysfs=on, modules={"torch": object()}, startup=startup) is False
