"""Wake an asyncio loop the moment a file is appended to (Linux inotify).

The console relay takes a guest's output from QEMU's ``logfile=``, which
QEMU writes just *after* the socket (chardev/char.c). Polling the log after
each socket read either costs sleeps on every keystroke echo or misses the
byte until the next look; an inotify ``IN_MODIFY`` watch instead fires as
soon as QEMU's write() returns, so the log stays the one source of the
bytes (exact across relay restarts) at the socket's latency.

Through ctypes (no dependency): ``inotify_init1``/``inotify_add_watch``
from the C library. Where they are missing (not Linux), :func:`watch`
returns None and the caller falls back to polling.

Django-free.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - probe: AttributeError where there is no inotify
        libc.inotify_add_watch  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class LogWatch:
    """Calls ``callback`` (in the loop) after each batch of writes to the
    watched file (or, watching a directory, to the file named ``name`` in it)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
                 name: bytes | None = None) -> None:
        self.fd = fd
        self.loop = loop
        self.callback = callback
        self.name = name
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        relevant = self.name is None
        try:
            # Drain the queued events: the callback re-reads the file anyway.
            while raw := os.read(self.fd, 65536):
                relevant = relevant or self._names(raw)
        except BlockingIOError:
            pass
        except OSError:
            return
        if relevant:
            self.callback()

    def _names(self, raw: bytes) -> bool:
        """Whether any event in ``raw`` is about the file named ``self.name``."""
        pos = 0
        while pos + _EVENT.size <= len(raw):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(raw, pos)
            name = raw[pos + _EVENT.size:pos + _EVENT.size + length].rstrip(b"\0")
            if name == self.name:
                return True
            pos += _EVENT.size + length
        return False

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def watch(path: Path, callback: Callable[[], None], *, by_name: bool = False) -> LogWatch | None:
    """A watch on the file now at ``path`` (its inode: a replaced file is
    not followed, the relay reopens the log per connection); with
    ``by_name``, on whatever file is at ``path``, through its directory
    (a log that rotates: the new file wakes us from its first write on).
    None when inotify is not available or the file is gone."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    target, mask = (path.parent, IN_MODIFY | IN_CREATE | IN_MOVED_TO) if by_name else (path, IN_MODIFY)
    if _LIBC.inotify_add_watch(fd, os.fsencode(str(target)), mask) < 0:
        os.close(fd)
        return None
    return LogWatch(fd, asyncio.get_running_loop(), callback, os.fsencode(path.name) if by_name else None)
