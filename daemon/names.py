"""Names from the file system, as text a person (and the store, and a log line) can take.

Linux file names are bytes. Python hands a name that is not UTF-8 over as a ``str``
holding surrogate escapes (PEP 383: the byte ``\\xff`` becomes ``\\udcff``), which
SQLite, JSON encoders and UTF-8 streams all refuse. ``shown`` writes such a name the
way a person can read and type it back: ``bad\\xff.json`` (the byte as ``\\xff``; any
other lone surrogate as ``\\udXXX``). A name that is UTF-8 is shown as it is.
"""

from __future__ import annotations

_ESCAPED_BYTES = range(0xDC80, 0xDD00)  # what surrogateescape makes of the bytes 0x80-0xff
_SURROGATES = range(0xD800, 0xE000)


def is_text(name: str) -> bool:
    """True if ``name`` is Unicode text (no byte of a name that is not UTF-8 in it)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """``text`` with what is not Unicode text escaped: ``bad\\udcff.json`` → ``bad\\xff.json``."""
    if is_text(text):
        return text
    out = []
    for char in text:
        code = ord(char)
        if code in _ESCAPED_BYTES:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _SURROGATES:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def printable(text: str) -> str:
    """``text`` as a terminal shows it literally: control characters (C0, DEL, C1) and the
    line and paragraph separators escaped (``\\x1b``, ``\\n``, ``\\u2028``), the rest as
    ``shown``. For keys and names in a command's text output; ``--json`` has them exactly.
    """
    text = shown(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(_CONTROL_NAMES.get(char) or f"\\x{code:02x}")
        elif code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


_CONTROL_NAMES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
