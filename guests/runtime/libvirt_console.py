"""A libvirt guest's serial console as a console relay source.

libvirt serves a domain's console (its ``<serial type='pty'>``) to one
client at a time through a *stream* (``virDomain.openConsole`` on a
``virStream``); output while no client is attached does not go anywhere
but the serial chardev's log. kdevweb defines that log
(``<log file=... append='off'/>``, see :mod:`.libvirt`), which libvirt hands
to virtlogd (the default ``stdio_handler = "logd"``): QEMU writes each byte
to the pty and then to virtlogd's pipe, virtlogd to the file — within a
millisecond or so, and it rotates the file at 2 MiB (:mod:`.logfollow`
follows that).

So this source is to the relay what the chardev socket is for QEMU guests:
the stream is the wake-up and the way in for keystrokes; the bytes come
from the log. A boot is one domain instance: the domain's id, UUID and
QEMU's pid (ids restart with libvirtd's state, pids get reused; together
they do not repeat in practice).

Threads, not libvirt's event loop: one thread per open console blocks in
``virStream.recv`` and hands the bytes to the relay's asyncio loop;
keystrokes are sent from one writer thread (in order); lookups run in
asyncio's default executor. The console is opened without
``VIR_DOMAIN_CONSOLE_FORCE``: a ``virsh console`` someone holds is not
stolen (the relay retries; the log keeps the output meanwhile, so nothing
is lost, only typing waits).

Django-free.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

from guests.runtime import offsetstream
from guests.runtime.libvirt import LibvirtGuestError, connect

log = logging.getLogger(__name__)
PID_DIR = Path("/run/libvirt/qemu")
# How long the log may keep growing after the stream ended (virtlogd copying
# QEMU's last bytes), and how long it must stay still to count as complete.
SETTLE_MAX = 2.0
SETTLE_QUIET = 0.15


class LibvirtConsoleConnection:
    """An open console stream: a reader thread feeding an asyncio queue."""

    def __init__(self, stream: libvirt.virStream, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.key = key
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libvirt-console-send")
        self._reader = threading.Thread(target=self._read_thread, name="libvirt-console-recv", daemon=True)
        self._reader.start()

    def _read_thread(self) -> None:
        try:
            while not self._closed:
                data = self.stream.recv(offsetstream.CHUNK)
                if not isinstance(data, bytes) or not data:
                    break  # EOF: the domain's QEMU closed the pty (stopping)
                self.loop.call_soon_threadsafe(self.queue.put_nowait, data)
        except libvirt.libvirtError as exc:
            if not self._closed:
                log.info("libvirt console stream ended: %s", exc)
        except RuntimeError:
            return  # the loop is closed: the relay is gone
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, b"")
        except RuntimeError:
            pass

    async def read(self) -> bytes:
        return await self.queue.get()

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self.stream.send(bytes(view))
            if not isinstance(sent, int) or sent < 0:
                raise ConnectionError("the libvirt console stream refused the bytes")
            view = view[sent:]

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError("the libvirt console is closed")
        try:
            await self.loop.run_in_executor(self._writer, self._send_all, data)
        except libvirt.libvirtError as exc:
            raise ConnectionError(f"libvirt console: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # Wakes the reader thread's recv with an error.
            self.stream.abort()
        except libvirt.libvirtError:
            pass
        self._writer.shutdown(wait=False)


class LibvirtConsoleSource:
    """The serial console of the domain ``domain`` on ``uri``, and its log."""

    log_rotates = True

    def __init__(self, uri: str, domain: str, logfile: Path | None, *, device: str | None = None) -> None:
        self.uri = uri
        self.domain = domain
        self.logfile = logfile
        self.device = device  # None: the domain's first console (the serial line)
        self._vconn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    # -- blocking parts (executor threads) ---------------------------------------

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._vconn is not None:
                try:
                    if self._vconn.isAlive():
                        return self._vconn
                except libvirt.libvirtError:
                    pass
                try:
                    self._vconn.close()
                except libvirt.libvirtError:
                    pass
                self._vconn = None
            try:
                self._vconn = connect(self.uri)
            except LibvirtGuestError as exc:
                raise OSError(str(exc)) from exc
            return self._vconn

    def _running_domain(self) -> tuple[libvirt.virDomain, str]:
        try:
            dom = self._connection().lookupByName(self.domain)
            if not dom.isActive():
                raise OSError(f"the domain {self.domain} is not running")
            return dom, f"{dom.ID()}:{dom.UUIDString()}:{self._qemu_pid()}"
        except libvirt.libvirtError as exc:
            raise OSError(f"libvirt: {exc}") from exc

    def _qemu_pid(self) -> str:
        try:
            return (PID_DIR / f"{self.domain}.pid").read_text().strip()
        except OSError:
            return "?"

    def _open(self) -> tuple[libvirt.virStream, str]:
        dom, key = self._running_domain()
        conn = self._connection()
        try:
            stream = conn.newStream(0)
            dom.openConsole(self.device, stream, 0)
        except libvirt.libvirtError as exc:
            # Held by someone else (virsh console) or the domain just stopped.
            raise OSError(f"libvirt console of {self.domain}: {exc}") from exc
        return stream, key

    # -- the source --------------------------------------------------------------

    async def connect(self) -> LibvirtConsoleConnection:
        loop = asyncio.get_running_loop()
        stream, key = await loop.run_in_executor(None, self._open)
        return LibvirtConsoleConnection(stream, key, loop)

    async def instance_key(self) -> str | None:
        try:
            return (await asyncio.get_running_loop().run_in_executor(None, self._running_domain))[1]
        except OSError:
            return None

    async def still_running(self, key: str) -> bool:
        # The stream also ends when libvirtd restarts; the domain runs on.
        return await self.instance_key() == key

    async def settle(self) -> None:
        """virtlogd copies QEMU's last bytes after the stream has ended:
        wait until the log stops growing (bounded)."""
        if self.logfile is None:
            return
        deadline = time.monotonic() + SETTLE_MAX
        last = -1
        while time.monotonic() < deadline:
            try:
                size = os.stat(self.logfile).st_size
            except OSError:
                return
            if size == last:
                return
            last = size
            await asyncio.sleep(SETTLE_QUIET)

    def close(self) -> None:
        with self._lock:
            if self._vconn is not None:
                try:
                    self._vconn.close()
                except libvirt.libvirtError:
                    pass
                self._vconn = None
