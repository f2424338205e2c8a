"""errors.one_line: the one way an exception becomes part of a one-line message."""

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
