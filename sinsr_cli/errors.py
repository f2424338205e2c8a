"""Errors every layer shares: a refused setting, and an exception as one line of text.

The lowest layer (no torch, no other sinsr module): the library raises :class:`SettingError`
naming a setting in its own terms (``steps``, ``tile``, ``seed``), and the CLI puts its flag
(``--steps``) in the name's place (``cli.common.flag_message``); any error's ``mentions`` (the
settings its message names as words) are respelled the same way. :func:`one_line` is the one
way an exception becomes part of a message (a report row, a JSON field, a terminal line).
"""

from __future__ import annotations

__all__ = ["SettingError", "one_line"]


class SettingError(ValueError):
    """A setting's value is refused. ``setting`` names it in library terms (``steps``,
    ``tile_overlap``); a message that begins with that name lets a front end put its own
    spelling of the setting (a flag) in its place."""

    def __init__(self, setting: str, message: str, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.setting = setting
        self.mentions = mentions  # settings named as words inside the message (a front end respells them)

    def __reduce__(self) -> tuple[object, ...]:  # survive multiprocessing
        return (type(self), (self.setting, str(self), self.mentions))


def one_line(err: BaseException | str, limit: int = 300, *, typed: bool = False) -> str:
    """``err`` as one line of at most ``limit`` characters, for a message that must stay one
    line (torch and PIL errors span several): white space folded, an exception with no text
    named by its type, ``typed`` puts the type in front (``OSError: ...``), a longer text cut
    with ``...``."""
    text = " ".join(str(err).split())
    if isinstance(err, BaseException):
        name = type(err).__name__
        text = f"{name}: {text}" if typed and text else text or name
    return text if len(text) <= limit else text[: limit - 3] + "..."
