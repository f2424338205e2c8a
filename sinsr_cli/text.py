"""Names shown to people: a file name may hold a newline, an escape sequence or bytes that are
not UTF-8 (kept by Python as lone surrogates). Reports and the comparison sheet show such
characters as visible escapes, so a name cannot break a table, a terminal or a text layout.

The lowest layer (no other sinsr module).
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every control, format or undecodable character written as an escape
    (``\\n``, ``\\x1b``, ``\\u200b``; a byte Python could not decode as ``\\xff``)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: the original byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)
