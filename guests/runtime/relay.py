"""The console relay: the one client of a guest console.

A guest console serves one client (QEMU's socket chardev, libvirt's
console stream), and output while none is attached reaches only its log.
So one relay per console (run by ``manage.py consolerelay`` on the guest's
host) holds the connection for the guest's whole life and:

* appends every byte to the transcript (:mod:`.transcript`, one file per
  boot, console offsets that continue across boots);
* publishes the bytes with their offsets to the console's Redis Stream
  (:mod:`.offsetstream`: pipelined XADD, trimmed to a window; a publish
  that fails is not retried — readers fill gaps by range request). The
  first bytes after a quiet spell go at once; under sustained output reads
  are merged into at most one publish per ``COALESCE`` (:mod:`.relaypublish`),
  and the log and socket are read at most once per ``READ_GAP``;
* answers range requests from its transcript (viewers on other machines);
* writes operators' input, read in order from the input stream, to the
  guest. Input is never dropped silently: input older than ``STALE_INPUT``
  (queued while no relay ran) or that cannot be written is reported on the
  event stream instead.

Where the connection comes from is a *source* (:mod:`.relaysource`: a
QEMU chardev socket, or a libvirt console stream in
:mod:`.libvirt_console`). It reconnects when the connection goes away
(QEMU restarted, domain stopped). A boot is one guest instance, named by
the source (socket inode; libvirt domain id and UUID): a restarted relay
resumes the open boot if the instance is the same one, else it ends that
boot (compressed) and begins another. Given the source's log it takes the
output from there (exact across relay restarts; see
:meth:`ConsoleRelay._open_log`), else from the connection.

Who may type and which terminal answers queries is decided by the web
side (it knows the users); the relay writes what reaches the input stream.

Django-free; asyncio. ``python -m guests.runtime.relay --help`` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from guests.runtime import offsetstream
from guests.runtime.logfollow import LogFollower
from guests.runtime.offsetstream import StreamKeys
from guests.runtime.relaypublish import OutputPublisher, RelayStats
from guests.runtime.relaysource import ChardevSource, Connection, ConsoleSource
from guests.runtime.transcript import TranscriptWriter, read_range

log = logging.getLogger(__name__)

# Input queued longer than this (e.g. while no relay ran) is not typed
# into the guest hours later: it is reported as dropped.
STALE_INPUT = 10.0
HEARTBEAT = 1.0
# As publishing (relaypublish.COALESCE), the reading: while output keeps coming, the log and the socket are
# read at most once per READ_GAP. QEMU writes the serial line a few bytes at
# a time (log and socket each), and a read per write cost the relay ~90 us
# (measured: 43% of a core at 5000 writes/s, CPU the guest under TCG needs);
# the kernel buffers a socket's bytes meanwhile, so the guest never waits.
READ_GAP = 0.004
# How often the log is read with nothing waking us: a safety net with an
# inotify watch, the latency of a byte logged after its socket wake-up without.
LOG_LOOK = 1.0
LOG_POLL = 0.05
# Largest log read at once. A relay restarted after hours of a chatty guest
# finds a backlog of any size: read whole, it would sit in memory and hold
# this event loop (every console of the host: sockets unread, guests
# blocked in their writes) for as long as the copy takes.
LOG_READ_MAX = 4 * 1024 * 1024


class ConsoleRelay:
    def __init__(self, *, transcript_dir: Path, redis: Any, keys: StreamKeys,
                 source: ConsoleSource | None = None, socket_path: Path | None = None,
                 logfile: Path | None = None, window: int = offsetstream.WINDOW,
                 reconnect_interval: float = 0.2, keep_seconds: float | None = None) -> None:
        if source is None:
            if socket_path is None:
                raise ValueError("a relay needs a source (or a chardev socket_path)")
            source = ChardevSource(socket_path, logfile)
        self.source = source
        self.redis = redis
        self.keys = keys
        self.window = window
        self.reconnect_interval = reconnect_interval
        self.keep_seconds = keep_seconds  # transcript retention (None: keep every boot)
        self._last_prune = 0.0
        self.transcript = TranscriptWriter(transcript_dir)
        self.stats = RelayStats()
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self.publisher = OutputPublisher(redis, keys, self.stats, window=window)
        # Ending a boot gzips its file (seconds for a long boot): in a thread,
        # as every console of the host shares this event loop and a QEMU
        # whose socket nobody reads blocks in its write (the guest slows).
        # The lock keeps retention's index edits from racing it.
        self._index_lock = asyncio.Lock()
        self._stopping = False
        self._failed_connects = 0

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (or :meth:`stop`)."""
        tasks = [asyncio.create_task(offsetstream.run_forever(loop, f"console relay {self.keys.prefix}")) for loop in (
            self._attach_loop, self.publisher.run, self._input_loop,
            lambda: offsetstream.serve_ranges(self.redis, self.keys, self._read_range), self._heartbeat_loop)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.publisher.clear()
            self.transcript.close()

    def stop(self) -> None:
        self._stopping = True
        self._connected.clear()
        if self._conn is not None:
            self._conn.close()

    # -- output ------------------------------------------------------------------------

    async def _attach_loop(self) -> None:
        try:
            await self._attach_forever()
        finally:
            self.source.close()

    async def _attach_forever(self) -> None:
        while not self._stopping:
            try:
                conn = await self.source.connect()
            except OSError:
                # Back off to 1 s while the guest is stopped: a host has many idle consoles.
                await asyncio.sleep(min(1.0, self.reconnect_interval * (1 + self._failed_connects)))
                self._failed_connects += 1
                continue
            self._failed_connects = 0
            self.stats.connects += 1
            # Not in a thread (unlike end()): the log must be opened right
            # after the connection, before a guest that exits at once has its
            # log removed by the next start. begin() compresses only when a
            # restarted relay finds another instance's open boot.
            boot, resumed = self.transcript.begin(conn.key)
            follower = self._open_log(boot.start, conn.key)
            self._conn = conn
            self._connected.set()
            try:
                await self._event("boot", boot=boot.boot, offset=boot.start, resumed=int(resumed))
                if follower is not None and follower.lost:
                    await self._event("log-gap", bytes=follower.lost)
                await self._pump(conn, follower)
            except (ConnectionError, OSError):
                pass
            finally:
                self._connected.clear()
                self._conn = None
                conn.close()
                if follower is not None:
                    if await self._log_is_ours(follower, conn.key):
                        # What the guest logged just before it went away.
                        await self.source.settle()
                        while self._follow_log(follower) == LOG_READ_MAX:
                            await asyncio.sleep(0)
                    follower.close()
            if self._stopping:
                return
            if await self.source.still_running(conn.key):
                # Only the connection broke (libvirtd restarted): same boot, reconnect.
                await asyncio.sleep(self.reconnect_interval)
                continue
            # EOF: the instance closed the console, i.e. it is exiting. The
            # boot ends here; a new instance begins the next one.
            async with self._index_lock:
                ended = await asyncio.to_thread(self.transcript.end)
            if ended is not None:
                await self._event("boot-ended", boot=ended.boot, offset=ended.end)
            await asyncio.sleep(self.reconnect_interval)

    def _open_log(self, boot_start: int, key: str) -> LogFollower | None:
        """The source's log, positioned after the bytes the transcript has
        of this boot; None without one.

        With a log the log is the source of the output and the connection
        only a wake-up: every byte reaches the log, client or not (a new
        instance truncates it), in the order the guest wrote them. So a
        relay that attaches late or restarts while the guest runs copies
        exactly what it missed, and no byte is taken twice.
        """
        if self.source.logfile is None:
            return None
        follower = LogFollower(self.source.logfile, rotates=self.source.log_rotates,
                               state_file=self.transcript.directory / "log-position.json")
        if not follower.open(key, self.transcript.offset - boot_start):
            return None
        return follower  # read by _pump, in pieces

    async def _log_is_ours(self, follower: LogFollower, key: str) -> bool:
        """Whether the log still holds this instance's bytes: a new instance
        truncates a log it finds unless the starter removed it first."""
        return follower.replaced() or await self.source.instance_key() == key

    def _follow_log(self, follower: LogFollower) -> int:
        data = follower.read(LOG_READ_MAX)
        if data:
            self._output(data)
        return len(data)

    async def _pump(self, conn: Connection, follower: LogFollower | None) -> None:
        if follower is None:
            loop, last = asyncio.get_running_loop(), -READ_GAP
            while data := await conn.read():
                self._output(data)
                last = await _gap_after(last, loop, len(data))
            return
        # The log is the source; what wakes us to read it: inotify on the log
        # (the guest's write to it), the connection's bytes (written just
        # before the log), and a periodic look as a safety net.
        wake = asyncio.Event()
        conn_ahead = False  # the connection had bytes since the log last gave any

        loop = asyncio.get_running_loop()

        async def drain() -> None:
            # Read the connection so the guest never waits on us; its bytes are the log's.
            nonlocal conn_ahead
            last = -READ_GAP
            try:
                while data := await conn.read():
                    conn_ahead = True
                    wake.set()
                    last = await _gap_after(last, loop, len(data))
            finally:
                wake.set()

        watched = follower.watch(wake.set)
        drainer = asyncio.ensure_future(drain())
        last = -READ_GAP  # when the log last gave bytes
        try:
            while True:
                # Sustained output: let the guest's writes gather in the log.
                if last + READ_GAP > loop.time():
                    await asyncio.sleep(last + READ_GAP - loop.time())
                # After the watch exists: a write before it is read here, one after it wakes us.
                got = self._follow_log(follower)
                if got:
                    # A big read: the guest writes fast, read on at once (not throttled).
                    last = loop.time() if got < offsetstream.CHUNK else -READ_GAP
                    conn_ahead = False
                    if got == LOG_READ_MAX:
                        # A backlog: read on after letting the socket and the other consoles run.
                        await asyncio.sleep(0)
                        wake.set()
                elif conn_ahead and not watched:
                    # No inotify: the log is written just after the connection, give it a moment.
                    for delay in (0.0005, 0.002):
                        await asyncio.sleep(delay)
                        if self._follow_log(follower):
                            conn_ahead = False
                            break
                if drainer.done():
                    drainer.result()  # EOF returns; a connection error raises to the caller
                    return
                timer = loop.call_later(LOG_LOOK if watched else LOG_POLL, wake.set)
                await wake.wait()
                timer.cancel()
                wake.clear()
        finally:
            drainer.cancel()

    def _output(self, data: bytes) -> None:
        offset = self.transcript.append(data)
        self.stats.received += len(data)
        self.publisher.add(offset, data)

    async def _read_range(self, start: int, end: int) -> bytes:
        return await asyncio.to_thread(read_range, self.transcript.directory, start, end)

    # -- input -------------------------------------------------------------------------

    async def _input_loop(self) -> None:
        # Resume after the last entry a relay wrote (kept in Redis), so input
        # queued during a relay restart is neither lost nor typed twice.
        position_key = self.keys.input + ":pos"
        last = (await self.redis.get(position_key) or b"0-0").decode()
        saved = last
        while True:
            # The position is saved once per batch, in the same round trip as
            # the next XREAD (a keystroke costs no extra one): a relay killed
            # mid-batch types at most that batch twice.
            pipe = self.redis.pipeline(transaction=False)
            if last != saved:
                pipe.set(position_key, last)
                saved = last
            pipe.xread({self.keys.input: last}, count=100, block=1000)
            got = (await pipe.execute())[-1]
            for _stream, entries in got or []:
                for eid, fields in entries:
                    last = eid.decode()
                    await self._type(last, fields)

    async def _type(self, eid: str, fields: dict) -> None:
        data = fields.get(b"d", b"")
        who = fields.get(b"u", b"?").decode(errors="replace")
        age = time.time() - int(eid.split("-")[0]) / 1000
        if age > STALE_INPUT:
            await self._drop(data, who, f"queued {age:.0f} s ago while no relay ran")
            return
        if not self._connected.is_set():
            waiter = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait({waiter}, timeout=max(0.1, STALE_INPUT - age))
            finally:
                waiter.cancel()
            if not self._connected.is_set():
                await self._drop(data, who, "the console is not connected")
                return
        conn = self._conn
        try:
            assert conn is not None
            await conn.write(data)
            self.stats.input_bytes += len(data)
        except (AssertionError, ConnectionError, OSError):
            await self._drop(data, who, "the console closed while writing")

    async def _drop(self, data: bytes, who: str, why: str) -> None:
        self.stats.input_dropped += len(data)
        log.warning("console input of %d bytes from %s not written: %s", len(data), who, why)
        await self._event("input-dropped", bytes=len(data), user=who, reason=why)

    # -- events and heartbeat ----------------------------------------------------------

    async def _event(self, kind: str, **fields: object) -> None:
        if kind.startswith("boot"):
            # Pages list the boots without reading the relay's disk.
            boots = [asdict(b) for b in self.transcript.index]
            with contextlib.suppress(Exception):
                await self.redis.set(self.keys.boots, json.dumps(boots))
        try:
            await self.redis.xadd(self.keys.events, {"type": kind, **{k: str(v) for k, v in fields.items()}},
                                  maxlen=1000, approximate=True)
        except Exception as exc:  # noqa: BLE001 - best effort, like publishing
            log.warning("console event %s not published: %s", kind, exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            if self.keep_seconds is not None and time.monotonic() - self._last_prune > 600:
                self._last_prune = time.monotonic()
                async with self._index_lock:
                    pruned = self.transcript.prune(self.keep_seconds)
                if pruned:
                    await self._event("boots-pruned", boots=",".join(str(b.boot) for b in pruned))
            current = self.transcript.current
            info = {"head": self.transcript.offset, "connected": self._connected.is_set(),
                    "boot": current.boot if current else None, "pid": os.getpid(), "host": socket.gethostname()}
            try:
                await self.redis.set(self.keys.producer, json.dumps(info), ex=int(HEARTBEAT * 5))
            except Exception as exc:  # noqa: BLE001
                log.warning("console heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT)


async def _gap_after(last: float, loop: asyncio.AbstractEventLoop, size: int) -> float:
    """After a small read that came less than READ_GAP after the previous one
    (``last``), wait out the gap: the next read then takes many writes at
    once. A read after a quiet spell waits for nothing, nor does a full one
    (``size`` a CHUNK: more is waiting, and a fast guest must not wait on
    us). Returns the time to count the next gap from."""
    now = loop.time()
    if size >= offsetstream.CHUNK:
        return -READ_GAP
    if now - last < READ_GAP:
        await asyncio.sleep(READ_GAP - (now - last))
        return loop.time()
    return now


def redis_client(url: str, password: str | None = None) -> Any:
    import redis.asyncio

    # socket_timeout None: blocking reads (XREAD BLOCK, BLPOP) wait longer than any default.
    return redis.asyncio.Redis.from_url(url, password=password, socket_timeout=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Relay one guest console (chardev socket) to Redis.")
    parser.add_argument("--socket", required=True, type=Path, help="QEMU's chardev unix socket")
    parser.add_argument("--transcript", required=True, type=Path, help="directory of the transcript")
    parser.add_argument("--guest", required=True, type=int)
    parser.add_argument("--console", required=True, choices=["ttyS0", "hvc0"])
    parser.add_argument("--logfile", type=Path, help="QEMU's logfile= for this chardev")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    async def run() -> None:
        redis = redis_client(args.redis, os.environ.get("REDIS_PASSWORD"))
        relay = ConsoleRelay(socket_path=args.socket, transcript_dir=args.transcript, redis=redis,
                             keys=offsetstream.console_keys(args.guest, args.console), logfile=args.logfile)
        await relay.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
