"""Following a console's log file: the relay's lossless source of output.

Both kinds of console write every byte to a log whether or not a client is
attached: QEMU's ``logfile=`` (QEMU guests), and the serial chardev's
``<log file=... append='off'/>`` of libvirt guests, which libvirt hands to
virtlogd (qemu.conf ``stdio_handler = "logd"``, the default): QEMU writes a
pipe, virtlogd copies it to the file. So a relay reads the output from the
log, positioned after what its transcript has of the boot, and the socket
or the libvirt stream is only the wake-up (see relay.py).

virtlogd also *rotates* the file once it reaches ``max_size`` (2 MiB by
default in virtlogd.conf): ``serial.log`` becomes ``serial.log.0`` and a new
``serial.log`` begins. With ``rotates=True`` the follower reads the old file
to its end, then the new one from its start. Which file it was in, and
where that file began in the boot, is kept in ``state_file`` so a relay
restarted after rotations resumes in the right file (found among the
``.N`` backups by inode). QEMU's own ``logfile=`` does not rotate; there a
different file at the path means a different QEMU (the next boot).

Django-free.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from guests.runtime import logwatch

log = logging.getLogger(__name__)
MAX_BACKUPS = 9  # virtlogd keeps max_backups (3 by default) of .0, .1, ...


class LogFollower:
    """Reads one boot's log from a position on, across rotations if ``rotates``."""

    def __init__(self, path: Path, *, rotates: bool = False, state_file: Path | None = None) -> None:
        self.path = Path(path)
        self.rotates = rotates
        self.state_file = state_file
        self.fh: BinaryIO | None = None
        self.key = ""
        self.base = 0  # position in the boot of the first byte of the open file
        self._chain: list[Path] = []  # newer files still to read (resuming after rotations)
        self._watch: logwatch.LogWatch | None = None
        self._on_change: Callable[[], None] | None = None
        self.lost = 0  # bytes of the boot no log file had any more (rotated away while no relay ran)

    # -- opening -----------------------------------------------------------------

    def open(self, key: str, boot_pos: int) -> bool:
        """Position at byte ``boot_pos`` of the boot ``key``; False without a log."""
        self.key = key
        state = self._load_state()
        start: tuple[Path, int] | None = None
        if self.rotates and state and state.get("key") == key and boot_pos >= int(state.get("base", 0)):
            start = self._find_inode(int(state.get("inode", -1)))
            if start is not None:
                self.base = int(state["base"])
        if start is None:
            self.base = 0
            start = (self.path, 0)
            if not self.path.exists():
                return False
        path, newer_index = start
        try:
            self.fh = open(path, "rb")
        except OSError:
            return False
        size = os.fstat(self.fh.fileno()).st_size
        offset = boot_pos - self.base
        if self.rotates and offset > size and path == self.path:
            # The boot has more than this file: rotated while no state was kept
            # (a relay that never saw it). Take what the file has from its start.
            self.lost = offset - size
            log.warning("log %s: %d bytes of the boot were rotated away", self.path, self.lost)
            self.base = boot_pos
            offset = 0
            self.fh.seek(0)
            self._chain = []
            self._save_state()
            return True
        self.fh.seek(offset)
        # Found in backup N (index N+1): backups N-1 .. 0, then the log itself, follow it.
        self._chain = [self._backup(i) for i in range(newer_index - 2, -1, -1)] + [self.path] if newer_index else []
        self._save_state()
        return True

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _find_inode(self, inode: int) -> tuple[Path, int] | None:
        """(file, index): the file with ``inode`` — the log itself (index 0)
        or its backup ``.N`` (index N+1: N+1 newer files follow it)."""
        candidates = [(self.path, 0)] + [(self._backup(n), n + 1) for n in range(MAX_BACKUPS)]
        for path, index in candidates:
            try:
                if os.stat(path).st_ino == inode:
                    return path, index
            except OSError:
                continue
        return None

    # -- reading -----------------------------------------------------------------

    def read(self, limit: int = -1) -> bytes:
        """Everything new since the last read (to the end of the current file,
        and on through the files that rotation put after it); at most
        ``limit`` bytes when it is given (a relay restarted after hours has
        a large backlog, read in pieces: see relay.py LOG_READ_MAX)."""
        if self.fh is None:
            return b""
        out = self.fh.read(limit) or b""
        while self.rotates and (limit < 0 or len(out) < limit):
            nxt = self._next_file()
            if nxt is None:
                break
            self.base += os.fstat(self.fh.fileno()).st_size
            self.fh.close()
            self.fh = nxt
            self._save_state()
            self._rewatch()
            out += self.fh.read(limit - len(out) if limit >= 0 else -1) or b""
        return out

    def _next_file(self) -> BinaryIO | None:
        """The file that follows the open one, once the open one is complete."""
        assert self.fh is not None
        if self._chain:
            path = self._chain.pop(0)
        else:
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fh.fileno()).st_ino:
                    return None  # still the live file
            except OSError:
                return None  # no new file yet
            # Rotated: the open file is complete (virtlogd renames it only
            # after its last write), so what is at the path follows it.
            path = self.path
        try:
            return open(path, "rb")
        except OSError:
            return None

    def replaced(self) -> bool:
        """Whether the path now names another file than the one being read."""
        if self.fh is None:
            return False
        try:
            return os.stat(self.path).st_ino != os.fstat(self.fh.fileno()).st_ino
        except OSError:
            return True  # gone: our descriptor still has the old file

    # -- waking ------------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> bool:
        """Call ``on_change`` when the file (or, rotating, the next one) grows;
        False without inotify (the caller polls)."""
        self._on_change = on_change
        self._rewatch()
        return self._watch is not None

    def _rewatch(self) -> None:
        if self._on_change is None:
            return
        if self.rotates:
            # Through the directory, by name: the file virtlogd creates at a
            # rotation wakes us too (a watch on the old inode would not).
            if self._watch is None:
                self._watch = logwatch.watch(self.path, self._on_change, by_name=True)
            return
        if self._watch is not None:
            self._watch.close()
        self._watch = logwatch.watch(self.path, self._on_change)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._on_change = None
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    # -- state (rotating logs only) ---------------------------------------------

    def _load_state(self) -> dict | None:
        if self.state_file is None:
            return None
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save_state(self) -> None:
        if self.state_file is None or not self.rotates or self.fh is None:
            return
        state = {"key": self.key, "inode": os.fstat(self.fh.fileno()).st_ino, "base": self.base}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)
