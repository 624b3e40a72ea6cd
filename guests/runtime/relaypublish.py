"""Publishing a console relay's output to its Redis Stream, coalesced.

The relay (:mod:`.relay`) hands every piece of output here with its
offset (after the transcript has it); :meth:`OutputPublisher.run` XADDs
pending output in order, merged into contiguous entries of up to CHUNK.
A publish that fails is not retried: readers fill gaps by range request.
See docs/consoles.md ("Few, larger entries").

Django-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from guests.runtime import offsetstream
from guests.runtime.offsetstream import StreamKeys

log = logging.getLogger("guests.runtime.relay")

# Pending output kept for Redis while a publish is in flight or failing;
# past it the relay stops buffering (readers fill the gap from disk).
MAX_PENDING = 16 * 1024 * 1024
# Under sustained output the relay publishes at most once per COALESCE
# seconds; the first bytes after a quiet spell of that length go at once.
# Why: a real guest's serial line reaches us in ~130-byte reads, and every
# entry costs each viewer an XREAD wake-up and a websocket frame (measured:
# 23k frames per viewer for a 2.9 MB burst; 10 viewers fell 12-22 s behind
# and the guest itself slowed). Holding bytes a few ms while more keep
# coming makes entries of KBs; an echo after idle is not held (the latency
# bench types one key 5 ms after the last echo arrived, so >= 5 ms apart).
COALESCE = 0.004


@dataclass
class RelayStats:
    received: int = 0
    published: int = 0
    entries: int = 0  # stream entries written (reads are merged into fewer)
    publish_failures: int = 0
    input_bytes: int = 0
    input_dropped: int = 0
    connects: int = 0


class OutputPublisher:
    def __init__(self, redis: Any, keys: StreamKeys, stats: RelayStats, *, window: int) -> None:
        self.redis, self.keys, self.stats, self.window = redis, keys, stats, window
        self.pending: list[tuple[int, bytes]] = []
        self.pending_bytes = 0
        self._wake = asyncio.Event()
        self._holding = False  # run() gathers output (sustained output)

    def add(self, offset: int, data: bytes) -> None:
        if self.pending_bytes + len(data) > MAX_PENDING:
            return  # Redis is not keeping up or down: readers fill from disk
        self.pending.append((offset, data))
        self.pending_bytes += len(data)
        # While run() holds output back, only a full entry wakes it (a
        # wake-up per 130-byte read would cost what holding saves).
        if not self._holding or self.pending_bytes >= offsetstream.CHUNK:
            self._wake.set()

    def clear(self) -> None:
        self.pending.clear()
        self.pending_bytes = 0

    def take(self) -> list[tuple[int, bytes]]:
        """Pending output merged into contiguous CHUNK-sized entries."""
        merged: list[tuple[int, bytes]] = []
        run_start, run = -1, bytearray()
        for offset, data in self.pending:
            if run and offset != run_start + len(run):
                merged += offsetstream.split(run_start, bytes(run))
                run = bytearray()
            if not run:
                run_start = offset
            run += data
        if run:
            merged += offsetstream.split(run_start, bytes(run))
        self.pending.clear()
        self.pending_bytes = 0
        return merged

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = -COALESCE  # when the last publish began
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Nagle-like: output that arrived while a publish was in flight is
            # taken together; and if the last publish began less than COALESCE
            # ago (output keeps coming), hold until then unless an entry is full.
            hold = last + COALESCE - loop.time()
            if hold > 0 and self.pending_bytes < offsetstream.CHUNK:
                self._holding = True
                timer = loop.call_later(hold, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                    self._holding = False
                    self._wake.clear()
            if not self.pending:
                continue
            last = loop.time()
            chunks = self.take()
            try:
                await offsetstream.publish(self.redis, self.keys, chunks, window=self.window)
                self.stats.published += sum(len(d) for _, d in chunks)
                self.stats.entries += len(chunks)
            except Exception as exc:  # noqa: BLE001 - Redis down or stream reset; disk has the bytes
                self.stats.publish_failures += 1
                if "equal or smaller" in str(exc):
                    # The stream is ahead of our transcript (its directory was
                    # replaced): start the stream over from our offsets.
                    log.warning("console stream %s is ahead of the transcript; resetting it", self.keys.out)
                    with contextlib.suppress(Exception):
                        await self.redis.delete(self.keys.out)
                else:
                    log.warning("publishing %s failed (%s); readers will fill from disk", self.keys.out, exc)
                    await asyncio.sleep(0.5)
