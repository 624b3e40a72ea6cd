"""Where a console relay's connection comes from: the pluggable part of the relay.

A *source* reaches one guest console that serves a single client:

* :class:`ChardevSource` — a QEMU guest's unix chardev socket, with QEMU's
  ``logfile=`` (this module);
* ``LibvirtConsoleSource`` — a libvirt guest's serial console through
  libvirt's console stream, with the log virtlogd writes
  (:mod:`guests.runtime.libvirt_console`).

The relay (:mod:`.relay`) does the rest the same way for both: transcript,
boots, Redis, input order and the no-silent-drop rule. Each connection
names the guest *instance* it reaches (its boot key): a new instance is a
new boot.

Django-free.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

from guests.runtime import offsetstream


class Connection(Protocol):
    key: str  # the guest instance this connection reaches (its boot)

    async def read(self) -> bytes:
        """The next bytes the guest wrote; b"" when the instance went away."""

    async def write(self, data: bytes) -> None:
        """Type ``data`` into the guest; raises OSError/ConnectionError when it cannot."""

    def close(self) -> None: ...


class ConsoleSource(Protocol):
    logfile: Path | None  # the log every byte reaches, attached or not (None: the connection alone)
    log_rotates: bool  # virtlogd rotates; QEMU's logfile= does not

    async def connect(self) -> Connection:
        """A connection to the running instance; OSError when there is none (guest stopped)."""

    async def instance_key(self) -> str | None:
        """The key of the instance running now (None: none), to tell whether
        a log still belongs to the instance a connection had."""

    async def settle(self) -> None:
        """Wait until the log has what the instance wrote before it went away."""

    async def still_running(self, key: str) -> bool:
        """After the connection ended: whether instance ``key`` runs on (the
        connection broke, not the guest: the boot goes on)."""

    def close(self) -> None: ...


class SocketConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key

    async def read(self) -> bytes:
        return await self.reader.read(offsetstream.CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class ChardevSource:
    """A QEMU chardev socket (``server=on,wait=off``) and its ``logfile=``.

    The instance is the socket file: a new QEMU binds a new one (new inode).
    """

    log_rotates = False

    def __init__(self, socket_path: Path, logfile: Path | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.logfile = logfile

    def _key(self) -> str:
        st = os.stat(self.socket_path)
        return f"{st.st_ino}:{st.st_ctime_ns}"

    async def connect(self) -> SocketConnection:
        key = self._key()
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 20)
        return SocketConnection(reader, writer, key)

    async def instance_key(self) -> str | None:
        try:
            return self._key()
        except OSError:
            return None

    async def settle(self) -> None:
        # QEMU writes its log itself, before the socket's EOF: nothing to wait for.
        return None

    async def still_running(self, key: str) -> bool:
        # QEMU closes the socket only when it exits (its socket file stays behind).
        return False

    def close(self) -> None:
        return None
