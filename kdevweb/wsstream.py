"""An offset stream to a websocket page, under acknowledgement flow control
(and the Redis clients of the offset streams' web-side users).

Shared by the console consumer (guests/console_consumer.py) and the build
log consumer (builds/consumers.py); the stream itself is
guests/runtime/offsetstream.py and the design is in docs/streams.md.

The consumer *pulls* from its StreamReader only while fewer than
``HIGH_WATER`` bytes it sent are unacknowledged by the page (the page
acknowledges what its terminal has rendered: ``{"type": "ack", "offset":
N}``). A slow page therefore holds no server memory: its reader stays
behind in Redis, and once behind the stream's window it is served by range
reads instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from django.conf import settings

from guests.runtime import offsetstream

HIGH_WATER = 1 << 20  # unacknowledged bytes per page before we stop pulling
# A consumer's ``channel_layer_alias`` for "none": streams need no channel
# layer, and its receive loop would end the socket when Redis restarts.
NO_CHANNEL_LAYER = "kdevweb-no-channel-layer"

_clients: dict[int, Any] = {}

# (offset, bytes, producer's stamp or None) -> sent to the page
SendChunk = Callable[[int, bytes, "float | None"], Awaitable[None]]
Split = Callable[[int, bytes], "list[tuple[int, bytes]]"]


def redis_for_loop() -> Any:
    """One redis.asyncio client (connection pool) per event loop of this process."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD,
                                              socket_timeout=None)
        _clients[id(loop)] = client
    return client


@lru_cache(maxsize=1)
def sync_redis() -> Any:
    """A synchronous client for publishers in threads and requests (status
    events, guest changes); short timeouts, as a publish must never hang."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD,
                                socket_timeout=2, socket_connect_timeout=2)


def parse_control(text: str | None) -> dict | None:
    """A page's JSON control frame, or None when it is not one (close with 4400)."""
    try:
        message = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message


class Flow:
    """Bytes sent to one page vs acknowledged by it (stream offsets)."""

    def __init__(self, offset: int, high_water: int = HIGH_WATER) -> None:
        self.sent = self.acked = offset
        self.high_water = high_water
        self._acked = asyncio.Event()

    def room(self) -> int:
        return self.high_water - (self.sent - self.acked)

    async def wait_room(self) -> None:
        while self.room() <= 0:
            self._acked.clear()
            await self._acked.wait()

    def ack(self, offset: Any) -> bool:
        """Record the page's acknowledgement; False if it is not an offset."""
        if not isinstance(offset, int) or isinstance(offset, bool):
            return False
        self.acked = max(self.acked, min(offset, self.sent))
        self._acked.set()
        return True

    def skip(self, end: int) -> None:
        """Bytes up to ``end`` will never be sent: count them as acknowledged
        (the page has nothing of them to acknowledge)."""
        unacked = self.sent - self.acked
        self.sent = max(self.sent, end)
        self.acked = max(self.acked, self.sent - unacked)
        self._acked.set()


class Pump:
    """Reader → page: pulls while the page has room, sends each chunk."""

    def __init__(self, reader: offsetstream.StreamReader, flow: Flow, *, send: SendChunk,
                 on_events: Callable[[list[dict]], Awaitable[None]] | None = None,
                 on_gap: Callable[[offsetstream.Gap], Awaitable[bool | None]] | None = None,
                 split: Split = offsetstream.split) -> None:
        self.reader, self.flow, self.send = reader, flow, send
        self.on_events, self.on_gap, self.split = on_events, on_gap, split

    async def step(self, *, block_ms: int | None = 1000) -> tuple[int, int]:
        """Wait for room, read once, send: (bytes read, events read)."""
        await self.flow.wait_room()
        try:
            chunks, events = await self.reader.read(block_ms=block_ms, max_bytes=self.flow.room())
        except offsetstream.Gap as gap:
            # on_gap returns False when the bytes can still come (from
            # another source it just set up): try again instead of skipping.
            if self.on_gap is None or await self.on_gap(gap) is not False:
                self.reader.skip_to(gap.end)
                self.flow.skip(gap.end)
            return 0, 0
        total = sum(len(data) for _, data in chunks)
        if chunks:
            # One frame per CHUNK, not per entry: the chunks of one read are
            # contiguous, and a frame costs the page and daphne about as much
            # as its bytes (a reader behind by many small entries got one
            # frame each). Range fills come in MBs; frames stay near CHUNK
            # (daphne's limit is 1 MB). ``split`` keeps text at line ends.
            start = chunks[0][0]
            data = chunks[0][1] if len(chunks) == 1 else b"".join(d for _, d in chunks)
            stamps = self._stamps(chunks)
            for offset, piece in self.split(start, data):
                await self.send(offset, piece, _earliest(stamps, offset, offset + len(piece)))
                self.flow.sent = offset + len(piece)
        if events and self.on_events is not None:
            await self.on_events(events)
        return total, len(events)

    def _stamps(self, chunks: list[tuple[int, bytes]]) -> list[tuple[int, int, float]]:
        """(start, end, producer's stamp) of the chunks that have one."""
        out = []
        for start, data in chunks:
            stamp = self.reader.stamps.get(start)
            if stamp is not None:
                out.append((start, start + len(data), stamp))
        return out

    async def run(self) -> None:
        while True:
            await self.step()


def _earliest(stamps: list[tuple[int, int, float]], start: int, end: int) -> float | None:
    """The earliest stamp of the chunks overlapping [start, end): a merged
    frame's latency is that of its oldest bytes (bench/log_latency.py)."""
    found = [stamp for s, e, stamp in stamps if s < end and e > start]
    return min(found) if found else None
