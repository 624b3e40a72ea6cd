"""Build logs on disk: one line per log line, appended while the build
runs (``log``), gzip-compressed when it ends (``log.gz``).

Django-free. Two kinds of position, both exact whichever file holds the
log: line numbers (0-based; :func:`read_lines`, the row's ``log_lines``)
and byte offsets in the log as written (:class:`ByteReader`), which are the
offsets of the build's offset stream (builds/stream.py) and of the page's
resume position.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

PLAIN = "log"
COMPRESSED = "log.gz"
# Nix's own --log-format internal-json stream, kept as it came (compressed
# when the build ends) so phases and activities can be re-parsed later.
RAW = "nix-internal-json.log"


class LogWriter:
    """Append-only writer that counts lines and bytes. Not thread-safe: one writer."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / PLAIN
        self.count = 0
        self._fh = open(self.path, "ab")
        self.size = self._fh.tell()  # byte offset of the next line

    def append(self, lines: list[str]) -> tuple[int, bytes]:
        """Append ``lines`` (no newlines inside); return (byte offset, bytes written)."""
        start = self.size
        if not lines:
            return start, b""
        data = "".join(line + "\n" for line in lines).encode("utf-8", "replace")
        self._fh.write(data)
        # Flush per batch: the worker answers range requests from this file,
        # and a line must be on disk before anyone is told it exists.
        self._fh.flush()
        self.count += len(lines)
        self.size += len(data)
        return start, data

    def write(self, lines: list[str]) -> int:
        """Append ``lines``; return the line number of the first."""
        start = self.count
        self.append(lines)
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


class ByteReader:
    """Bytes ``[start, end)`` of a log, cut after its last complete line.

    Keeps its file open between calls so reading a log front to back (a
    page joining a finished build) decompresses it once; it reopens only
    when asked for another position.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fh: Any = None
        self._file: Any = None
        self._pos = 0
        self._carry = b""  # read past the last complete line, not returned yet

    def read(self, start: int, end: int) -> bytes:
        if self._fh is None or start != self._pos:
            self.close()
            fh, gzipped = raw_stream(self.directory)
            if fh is None:
                return b""
            # An open plain file stays readable after compress() replaced it:
            # the writer is closed by then, so it holds the whole log.
            self._file = fh
            self._fh = gzip.GzipFile(fileobj=fh) if gzipped else fh
            self._fh.seek(start)
            self._pos, self._carry = start, b""
        want = max(0, end - start)
        more = self._fh.read(want - len(self._carry)) if want > len(self._carry) else b""
        data = self._carry + more
        data, rest = data[:want], data[want:]
        # A line still being written (or past `end`) waits for a later call,
        # unless one line is longer than the whole range.
        cut = data.rfind(b"\n") + 1 or (len(data) if len(data) == want else 0)
        self._carry = data[cut:] + rest
        self._pos = start + cut
        return data[:cut]

    def close(self) -> None:
        for fh in (self._fh, self._file):
            if fh is not None:
                fh.close()
        self._fh = self._file = None
        self._carry = b""


def raw_stream(directory: Path, name: str = PLAIN):
    """(file object, is_gzipped) for downloading a log file, or (None, False)."""
    directory = Path(directory)
    # Plain first: compress() writes the .gz before it unlinks the plain
    # file, so a plain file missing here means the .gz is complete. The
    # other order can miss both while a build's log is being compressed.
    for candidate, gzipped in ((name, False), (name + ".gz", True)):
        try:
            return open(directory / candidate, "rb"), gzipped
        except FileNotFoundError:
            continue
    return None, False
