"""Terminal query replies in keyboard input.

A terminal answers some of what the host writes to it: ``ESC[6n`` (cursor
position) with ``ESC[<row>;<col>R``, ``ESC[c`` (device attributes) with
``ESC[?...c``, and so on. Busybox ash asks for the cursor position at every
prompt and reads the answer from its input. With N browsers on a console
xterm.js would answer N times and every extra answer would land on the
command line as typed text, so the web side lets through the replies of
one terminal only (the "answerer") and removes them from everybody else's
input with :func:`strip_replies`.

Django-free; pure.
"""

from __future__ import annotations

import re

_REPLIES = re.compile(
    rb"\x1b\[\d+;\d+R"  # CPR: cursor position report (answer to CSI 6 n)
    rb"|\x1b\[\?\d+;\d+;?\d*R"  # DECXCPR
    rb"|\x1b\[[?>=][\d;]*c"  # DA1 / DA2 / DA3 answers
    rb"|\x1b\[[03]n"  # DSR status answers
    rb"|\x1b\[\??[\d;]+\$y"  # DECRPM: mode reports
    rb"|\x1b\][0-9]+;[^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC answers (colour queries)
    rb"|\x1bP[01]\$r[^\x1b]*\x1b\\"  # DECRQSS answers
    rb"|\x1bP>\|[^\x1b]*\x1b\\"  # XTVERSION answer
)


def strip_replies(data: bytes) -> bytes:
    """``data`` without terminal query replies (keystrokes stay)."""
    if b"\x1b" not in data:
        return data
    return _REPLIES.sub(b"", data)


def has_reply(data: bytes) -> bool:
    return b"\x1b" in data and _REPLIES.search(data) is not None
