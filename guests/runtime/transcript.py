"""A console's transcript on disk: every byte the guest wrote, one file per boot.

Offsets are *console offsets*: byte positions in the concatenation of all
boots of one console, so a viewer's position survives reboots and QEMU
restarts (boot 2 starts where boot 1 ended) and "resume from offset N" has
one meaning everywhere (the relay, the Redis stream, the page).

Layout of a console's directory::

    boots.json              index: [{boot, start, end, key, started, ended}]
    boot-000001.log.gz      an ended boot, compressed
    boot-000002.log         the boot being written (plain, appended)

``boots.json`` is replaced atomically; a boot's ``end`` is None while it is
written (its plain file's size then gives it). One writer (the relay) per
directory; readers may be anywhere that sees the directory.

Django-free.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

INDEX = "boots.json"


@dataclass
class Boot:
    boot: int
    start: int
    end: int | None = None  # None while being written
    key: str = ""  # what identifies the QEMU instance (socket inode), to resume after a relay restart
    started: float = 0.0
    ended: float | None = None

    @property
    def plain(self) -> str:
        return f"boot-{self.boot:06d}.log"

    @property
    def packed(self) -> str:
        return self.plain + ".gz"


class TranscriptError(RuntimeError):
    pass


def read_index(directory: Path) -> list[Boot]:
    try:
        raw = json.loads((Path(directory) / INDEX).read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise TranscriptError(f"{directory / INDEX}: not valid JSON ({exc})") from None
    return [Boot(**{k: v for k, v in item.items() if k in Boot.__dataclass_fields__}) for item in raw]


def _boot_size(directory: Path, boot: Boot) -> int:
    if boot.end is not None:
        return boot.end - boot.start
    try:
        return (Path(directory) / boot.plain).stat().st_size
    except FileNotFoundError:
        return 0


def boots(directory: Path) -> list[Boot]:
    """The index with every open boot's end filled in from its file (a snapshot)."""
    out = []
    for boot in read_index(directory):
        if boot.end is None:
            boot = Boot(**{**asdict(boot), "end": boot.start + _boot_size(directory, boot)})
            boot.ended = None
        out.append(boot)
    return out


def head(directory: Path) -> int:
    """The console offset one past the last byte written."""
    index = boots(directory)
    return index[-1].end if index and index[-1].end is not None else 0


def read_range(directory: Path, start: int, end: int | None = None) -> bytes:
    """Bytes ``[start, end)`` of the console, across boots (end None: to the head).

    Whatever part of the range is not on disk (yet) is left out at the end:
    the result is always the prefix that exists.
    """
    directory = Path(directory)
    out = bytearray()
    for boot in boots(directory):
        assert boot.end is not None
        lo, hi = max(start, boot.start), boot.end if end is None else min(end, boot.end)
        if lo >= hi:
            continue
        if lo != start + len(out):
            break  # a hole (a boot file lost): stop at the prefix that is contiguous
        out += _read_boot(directory, boot, lo - boot.start, hi - boot.start)
    return bytes(out)


def _read_boot(directory: Path, boot: Boot, lo: int, hi: int) -> bytes:
    for name, opener in ((boot.plain, open), (boot.packed, gzip.open)):
        try:
            with opener(directory / name, "rb") as fh:
                fh.seek(lo)  # gzip seeks by decompressing: fine for console-sized files
                return fh.read(hi - lo)
        except FileNotFoundError:
            continue
    # The plain file was compressed between our index read and open: retry once.
    try:
        with gzip.open(directory / boot.packed, "rb") as fh:
            fh.seek(lo)
            return fh.read(hi - lo)
    except FileNotFoundError:
        return b""


class TranscriptWriter:
    """The relay's side: begin/append/end boots. Not thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.index = read_index(self.directory)
        self._fh = None
        self.offset = 0
        if self.index:
            last = self.index[-1]
            self.offset = last.start + _boot_size(self.directory, last)
            if last.end is None:
                self._fh = open(self.directory / last.plain, "ab")

    @property
    def current(self) -> Boot | None:
        return self.index[-1] if self.index and self.index[-1].end is None else None

    def _save(self) -> None:
        tmp = self.directory / (INDEX + ".tmp")
        tmp.write_text(json.dumps([asdict(b) for b in self.index]))
        os.replace(tmp, self.directory / INDEX)

    def begin(self, key: str) -> tuple[Boot, bool]:
        """Start a boot for the QEMU instance ``key``; (boot, resumed).

        The open boot is continued when it has the same key (the relay was
        restarted while the guest ran), else ended and a new one begun.
        """
        current = self.current
        if current is not None and current.key == key and key:
            return current, True
        if current is not None:
            self.end()
        boot = Boot(boot=(self.index[-1].boot + 1) if self.index else 1, start=self.offset, key=key,
                    started=time.time())
        self.index.append(boot)
        self._fh = open(self.directory / boot.plain, "ab")
        self._save()
        return boot, False

    def append(self, data: bytes) -> int:
        """Write ``data`` to the open boot; its console offset."""
        if self._fh is None:
            raise TranscriptError("no boot is open")
        start = self.offset
        self._fh.write(data)
        # Flushed per chunk: range requests read the file, and a byte must
        # be there before any viewer hears of it.
        self._fh.flush()
        self.offset += len(data)
        return start

    def end(self) -> Boot | None:
        """End the open boot: fix its end, compress it. None if none was open."""
        current = self.current
        if current is None:
            return None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        current.end = self.offset
        current.ended = time.time()
        plain, packed = self.directory / current.plain, self.directory / current.packed
        if plain.exists():
            tmp = self.directory / (current.packed + ".tmp")
            with open(plain, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, packed)
            # Index first, then unlink: a reader that saw the old index
            # finds the .gz (readers try plain, then packed).
            self._save()
            plain.unlink()
        else:
            self._save()
        return current

    def prune(self, keep_seconds: float, now: float | None = None) -> list[Boot]:
        """Delete ended boots that ended more than ``keep_seconds`` ago (the
        retention setting); the offsets of the rest do not change."""
        now = time.time() if now is None else now
        old = [b for b in self.index if b.end is not None and b.ended is not None and b.ended < now - keep_seconds]
        if not old:
            return []
        self.index = [b for b in self.index if b not in old]
        self._save()  # first: a reader never finds an indexed boot without its file
        for boot in old:
            (self.directory / boot.packed).unlink(missing_ok=True)
            (self.directory / boot.plain).unlink(missing_ok=True)
        return old

    def close(self) -> None:
        """Stop writing without ending the boot (the relay stops, the guest runs on)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
