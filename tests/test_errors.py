"""The shared lowest layer: errors.one_line (an exception as one line), files.atomic_path."""

from __future__ import annotations

from sinsr_cli.errors import one_line


def test_one_line_folds_white_space_and_names_an_empty_error() -> None:
    assert one_line(RuntimeError("first line\n\n  second\tline ")) == "first line second line"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(OSError("disk full"), typed=True) == "OSError: disk full"
    assert one_line(ValueError(""), typed=True) == "ValueError"
    assert one_line("  plain\ntext ") == "plain text"


def test_one_line_cuts_long_text_to_the_limit() -> None:
    text = one_line(ValueError("x" * 500), 160)
    assert len(text) == 160 and text.endswith("...")
    assert one_line(ValueError("y" * 160), 160) == "y" * 160


def test_atomic_path_replaces_only_when_the_body_finishes(tmp_path) -> None:
    import os

    import pytest

    from sinsr_cli.files import atomic_path

    target = tmp_path / "sub" / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.json.")
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # like any new file, not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "whole" and os.listdir(target.parent) == ["out.json"]
