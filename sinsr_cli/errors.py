"""Errors every layer shares: a refused setting, and an exception as one line of text.

The lowest layer (no torch, no other sinsr module): the library raises :class:`SettingError`
naming a setting in its own terms (``steps``, ``tile``, ``seed``), and the CLI puts its flag
(``--steps``) in the name's place (``cli.common.flag_message``).
"""

from __future__ import annotations

__all__ = ["SettingError"]


class SettingError(ValueError):
    """A setting's value is refused. ``setting`` names it in library terms (``steps``,
    ``tile_overlap``); a message that begins with that name lets a front end put its own
    spelling of the setting (a flag) in its place."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting

    def __reduce__(self) -> tuple[object, ...]:  # survive multiprocessing
        return (type(self), (self.setting, str(self)))
