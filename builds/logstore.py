"""Build logs on disk: one line per log line, appended while the build
runs (``log``), gzip-compressed when it ends (``log.gz``).

Django-free. Line numbers (0-based offsets) are the contract between the
writer, the live stream and late joiners: a reader asks for lines
``[start, end)`` and gets exactly those, whichever file holds them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

PLAIN = "log"
COMPRESSED = "log.gz"
# Nix's own --log-format internal-json stream, kept as it came (compressed
# when the build ends) so phases and activities can be re-parsed later.
RAW = "nix-internal-json.log"


class LogWriter:
    """Append-only writer that counts lines. Not thread-safe: one writer."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / PLAIN
        self.count = 0
        self._fh = open(self.path, "a", encoding="utf-8", errors="replace")

    def write(self, lines: list[str]) -> int:
        """Append ``lines`` (no newlines inside); return the offset of the first."""
        start = self.count
        if lines:
            self._fh.write("".join(line + "\n" for line in lines))
            # Flush per batch: a late joiner backfills from this file, and a
            # line must be on disk before anyone is told it exists.
            self._fh.flush()
            self.count += len(lines)
        return start

    def close(self) -> None:
        self._fh.close()


def split_text(text: str) -> list[str]:
    """Split arbitrary output into log lines (CR-LF and lone CR tolerated)."""
    return text.replace("\r\n", "\n").rstrip("\n").split("\n") if text else []


def compress(directory: Path, name: str = PLAIN) -> None:
    """Replace ``name`` by ``name.gz`` atomically (readers see one or the other)."""
    directory = Path(directory)
    plain, packed = directory / name, directory / (name + ".gz")
    if not plain.exists():
        return
    tmp = directory / (name + ".gz.tmp")
    with open(plain, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, packed)
    plain.unlink()


def _open(directory: Path):
    directory = Path(directory)
    try:
        # newline="\n": only \n ends a line, as when it was written; a lone
        # \r inside a line (progress bars) must not shift the offsets.
        return open(directory / PLAIN, encoding="utf-8", errors="replace", newline="\n")
    except FileNotFoundError:
        pass
    try:
        return gzip.open(directory / COMPRESSED, "rt", encoding="utf-8", errors="replace", newline="\n")
    except FileNotFoundError:
        return None


def read_lines(directory: Path, start: int = 0, end: int | None = None) -> list[str]:
    """Lines ``[start, end)`` of the log (to the last complete line if end is None)."""
    fh = _open(directory)
    if fh is None:
        return []
    out: list[str] = []
    with fh:
        for i, line in enumerate(fh):
            if end is not None and i >= end:
                break
            if not line.endswith("\n"):
                break  # a line still being written: not complete yet
            if i >= start:
                out.append(line[:-1])
    return out


def raw_stream(directory: Path, name: str = PLAIN):
    """(file object, is_gzipped) for downloading a log file, or (None, False)."""
    directory = Path(directory)
    for candidate, gzipped in ((name + ".gz", True), (name, False)):
        try:
            return open(directory / candidate, "rb"), gzipped
        except FileNotFoundError:
            continue
    return None, False
