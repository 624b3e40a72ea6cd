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
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x00000002
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
    """Calls ``callback`` (in the loop) after each batch of writes to ``path``."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.fd = fd
        self.loop = loop
        self.callback = callback
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            # Drain the queued events: the callback re-reads the file anyway.
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError:
            return
        self.callback()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def watch(path: Path, callback: Callable[[], None]) -> LogWatch | None:
    """A watch on the file now at ``path`` (its inode: a replaced file is
    not followed, the relay reopens the log per connection); None when
    inotify is not available or the file is gone."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    if _LIBC.inotify_add_watch(fd, os.fsencode(str(path)), IN_MODIFY) < 0:
        os.close(fd)
        return None
    return LogWatch(fd, asyncio.get_running_loop(), callback)
