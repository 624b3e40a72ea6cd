"""A build's live output on its offset stream (worker side).

The worker running a build is the producer of kind ``build``, id
``<build id>`` (guests/runtime/offsetstream.py; docs/streams.md):

- ``:out``  the shown log's bytes, XADDed with their byte offsets in the log
  file, cut at line boundaries (an escape sequence is never split), each
  entry stamped with when its oldest line was read from nix (``t``);
- ``:ev``   ``progress`` {p: NixProgress snapshot JSON} and ``status`` {}
  (the row changed: readers re-read it);
- ``:producer`` heartbeat {head: bytes written, running};
- range requests answered from the log file while the build runs, so a web
  node needs no access to the worker's disk for a running build.

Publishing never blocks or breaks a build: emit() only appends to a list; a
thread with its own event loop talks to Redis. If Redis is down, the bytes
are still in the log file and readers fill from the producer (or, for a
finished build, from the log store). When the build ends its keys expire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from guests.runtime import offsetstream
from kdevweb.wsstream import sync_redis

from . import logstore

log = logging.getLogger(__name__)

# A finished build's keys live this long (pages that joined late read the
# log store instead; they never need the keys).
KEEP_AFTER_END = 600
# Output held for Redis while a publish is slow or failing; past it the
# publisher drops it (readers fill from the file).
MAX_PENDING = 16 * 1024 * 1024
HEARTBEAT = 1.0


def keys(build_id: int) -> offsetstream.StreamKeys:
    return offsetstream.build_keys(build_id)


def publish_status(build_id: int) -> None:
    """Tell readers the build row changed (best effort: pages also poll the row)."""
    try:
        offsetstream.add_event_sync(sync_redis(), keys(build_id), {"type": "status"}, maxlen=100,
                                    expire=KEEP_AFTER_END)
    except Exception as exc:  # noqa: BLE001 - Redis down: pages fall back to the stored state
        log.warning("status publish for build %s failed: %s", build_id, exc)


class BuildPublisher:
    """The producer of one build's stream, from a daemon thread's event loop."""

    def __init__(self, build_id: int, directory: Path, *, window: int | None = None, interval: float = 0.02) -> None:
        self.keys = keys(build_id)
        self.directory = Path(directory)
        self.window = window if window is not None else settings.BUILD_STREAM_WINDOW
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: list[tuple[int, bytes]] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._progress: dict | None = None
        self._status = False
        self._head = 0
        self._closed = threading.Event()
        self._wake = threading.Event()
        self.served = 0  # bytes sent in answer to range requests (heartbeat; tests)
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=f"publish-build-{build_id}", daemon=True)
        self._thread.start()

    # -- called by the build (any thread) -------------------------------------------------

    def output(self, offset: int, data: bytes) -> None:
        """``data`` (whole lines) was written to the log at ``offset``."""
        with self._lock:
            self._head = offset + len(data)
            if self._pending_bytes + len(data) <= MAX_PENDING:
                if not self._pending:
                    self._pending_since = time.time()
                self._pending.append((offset, data))
                self._pending_bytes += len(data)
        self._wake.set()

    def status(self) -> None:
        """Tell readers the row changed (published after the output before it)."""
        with self._lock:
            self._status = True
        self._wake.set()

    def progress(self, snapshot: dict) -> None:
        with self._lock:
            self._progress = snapshot
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending, give the keys their expiry, and stop."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout)

    # -- the publishing thread ------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD,
                                              socket_timeout=None, socket_connect_timeout=2)
        reader = logstore.ByteReader(self.directory)

        async def read_range(start: int, end: int) -> bytes:
            data = await asyncio.to_thread(reader.read, start, min(end, self._head))
            self.served += len(data)
            return data

        ranges = asyncio.create_task(offsetstream.run_forever(
            lambda: offsetstream.serve_ranges(client, self.keys, read_range), self.keys.prefix))
        heartbeat = asyncio.create_task(offsetstream.run_forever(lambda: self._heartbeat(client), self.keys.prefix))
        try:
            await self._start(client)
            await self._publish_loop(client)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            try:
                # Before the range server stops: readers stop asking for
                # ranges nobody will answer (they read the log store).
                await self._beat(client, running=False)
                await offsetstream.expire(client, self.keys, KEEP_AFTER_END)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %s failed: %s", self.keys.prefix, exc)
            ranges.cancel()
            await asyncio.gather(ranges, return_exceptions=True)
            reader.close()
            await client.aclose()

    async def _start(self, client: Any) -> None:
        # Build ids are reused after a database reset: an old build's
        # output under the same id would read as this build's.
        try:
            await client.delete(self.keys.out, self.keys.requests, self.keys.producer)
        except Exception as exc:  # noqa: BLE001
            log.warning("resetting %s failed: %s", self.keys.prefix, exc)

    async def _beat(self, client: Any, *, running: bool) -> None:
        info = {"head": self._head, "running": running, "served": self.served, "pid": os.getpid()}
        await client.set(self.keys.producer, json.dumps(info), ex=int(HEARTBEAT * 5) if running else KEEP_AFTER_END)

    async def _heartbeat(self, client: Any) -> None:
        while True:
            await self._beat(client, running=True)
            await asyncio.sleep(HEARTBEAT)

    def _take(self) -> tuple[list[tuple[int, bytes]], float, dict | None, bool, bool]:
        with self._lock:
            pending, since = self._pending, self._pending_since
            self._pending, self._pending_bytes = [], 0
            progress, self._progress = self._progress, None
            status, self._status = self._status, False
            return pending, since, progress, status, self._closed.is_set()

    async def _publish_loop(self, client: Any) -> None:
        while True:
            await asyncio.to_thread(self._wake.wait, 1.0)
            self._wake.clear()
            pending, since, progress, status, closed = self._take()
            try:
                await self._send(client, pending, since, progress, status)
            except Exception as exc:  # noqa: BLE001 - Redis down or reset; the file has the bytes
                self.failures += 1
                log.warning("publishing %s failed (%s); readers will fill from the file", self.keys.out, exc)
                if "equal or smaller" in str(exc):
                    await client.delete(self.keys.out)  # a stale stream ahead of this log
            if closed:
                return
            # Let lines accumulate a little (entries, not one XADD a line).
            await asyncio.sleep(self.interval)

    async def _send(self, client: Any, pending: list[tuple[int, bytes]], since: float, progress: dict | None,
                    status: bool) -> None:
        chunks: list[tuple[int, bytes]] = []
        for offset, data in _merge(pending):
            chunks += offsetstream.split_lines(offset, data)
        await offsetstream.publish(client, self.keys, chunks, window=self.window, stamp=since)
        if progress is not None or status:
            pipe = client.pipeline(transaction=False)
            if progress is not None:
                pipe.xadd(self.keys.events, {"type": "progress", "p": json.dumps(progress)}, maxlen=100,
                          approximate=True)
            if status:
                pipe.xadd(self.keys.events, {"type": "status"}, maxlen=100, approximate=True)
            await pipe.execute()


def _merge(pending: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Contiguous runs of (offset, bytes), so entries fill up to CHUNK."""
    runs: list[tuple[int, bytearray]] = []
    for offset, data in pending:
        if runs and runs[-1][0] + len(runs[-1][1]) == offset:
            runs[-1][1].extend(data)
        else:
            runs.append((offset, bytearray(data)))
    return [(offset, bytes(data)) for offset, data in runs]
