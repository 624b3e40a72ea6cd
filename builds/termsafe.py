"""Make build log text safe for the page's terminal (xterm.js).

Build output is written by whoever controls the Nix code, and xterm.js
obeys what it is sent: cursor movement and erase sequences can rewrite
lines already shown, OSC 8 makes disguised links, OSC 52 writes the
clipboard. Build logs keep colours and text attributes (SGR: ``ESC [ ... m``)
and lose every other control sequence and control character (but TAB).
Only what goes to the page is filtered; the stored log keeps the bytes.

Django-free; pure string functions.
"""

import re

# Alternatives, leftmost first: an SGR sequence (kept); any other CSI
# (7-bit ``ESC [`` or 8-bit 0x9b); string sequences OSC/DCS/SOS/PM/APC up to
# their terminator (BEL or ST) or, when cut off, the end of the line; other
# ESC sequences (``ESC ( B``, ``ESC 7``...); lone control characters.
_SEQUENCE = re.compile(
    r"(?P<sgr>\x1b\[[0-9;:]*m)"
    r"|(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f]",
    re.DOTALL,
)


def _keep_sgr(match: re.Match[str]) -> str:
    return match.group("sgr") or ""


def terminal_safe(line: str) -> str:
    """``line`` with SGR sequences kept and every other control sequence removed."""
    if not any(c < " " or "\x7f" <= c <= "\x9f" for c in line):
        return line  # the common case: nothing to do
    return _SEQUENCE.sub(_keep_sgr, line)
