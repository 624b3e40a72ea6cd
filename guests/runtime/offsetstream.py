"""One lossless byte stream per job, keyed by kind and id, in Redis.

A *job* is anything that produces an ordered byte stream many pages watch:
a guest console (kind ``console``, id ``<guest>.<console>``) today; the
build log is the next candidate (see docs/consoles.md). The producer
appends chunks at known offsets; readers resume from any offset.

Keys (``P`` = ``kdevweb:<kind>:<id>``):

``P:out``       Redis Stream of output chunks. The entry ID *is* the chunk's
                offset (``<offset>-1``), field ``d`` the bytes, so "read from
                offset N" is an XREAD from ID ``N-0`` and no mapping is kept.
                Trimmed by offset (``XADD ... MINID ~``) to a window of bytes.
``P:ev``        Redis Stream of events (boot began/ended, input dropped).
``P:in``        Redis Stream of input for the producer (console keystrokes),
                read in order by the one producer.
``P:rq``        List of range requests: the producer answers from its disk
                (bytes older than the window), so readers never need to
                share a disk with it.
``P:producer``  The producer's heartbeat (JSON, expires): head offset, boot,
                whether its source is connected.
``P:boots``     The producer's list of boots (JSON; consoles only).
``P:who``       Hash of the viewers (presence), ``P:answerer`` the viewer
                whose terminal answers queries (a lease), ``P:typed`` who
                typed last.

Readers detect any gap by offset (a chunk that starts past what they have)
and fill it with a range request, so a reader that fell behind the window,
a producer whose XADDs failed for a while, or a reader on another machine
all end up with every byte exactly once.

Django-free: callers pass a ``redis.asyncio.Redis``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Chunks are cut at this size: one XADD entry, one websocket frame.
CHUNK = 64 * 1024
# Bytes kept in Redis per stream; older bytes come from the producer's disk.
WINDOW = 8 * 1024 * 1024
# Largest range one request returns (a reader asks again for the rest).
RANGE_MAX = 4 * 1024 * 1024


@dataclass(frozen=True)
class StreamKeys:
    kind: str
    ident: str

    @property
    def prefix(self) -> str:
        return f"kdevweb:{self.kind}:{self.ident}"

    @property
    def out(self) -> str:
        return self.prefix + ":out"

    @property
    def events(self) -> str:
        return self.prefix + ":ev"

    @property
    def input(self) -> str:
        return self.prefix + ":in"

    @property
    def requests(self) -> str:
        return self.prefix + ":rq"

    @property
    def producer(self) -> str:
        return self.prefix + ":producer"

    @property
    def who(self) -> str:
        return self.prefix + ":who"

    @property
    def answerer(self) -> str:
        return self.prefix + ":answerer"

    @property
    def typed(self) -> str:
        return self.prefix + ":typed"

    @property
    def boots(self) -> str:
        return self.prefix + ":boots"


def console_keys(guest_id: int, console: str) -> StreamKeys:
    return StreamKeys("console", f"{int(guest_id)}.{console}")


def entry_id(offset: int) -> str:
    # "-1": a stream ID may not be 0-0, and offset 0 is a real chunk.
    return f"{offset}-1"


def entry_offset(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])


def split(offset: int, data: bytes, size: int = CHUNK) -> list[tuple[int, bytes]]:
    return [(offset + i, data[i:i + size]) for i in range(0, len(data), size)]


async def publish(redis: Any, keys: StreamKeys, chunks: list[tuple[int, bytes]], *,
                  window: int = WINDOW) -> None:
    """XADD ``chunks`` (offset, bytes), in order, in one pipeline."""
    if not chunks:
        return
    end = chunks[-1][0] + len(chunks[-1][1])
    pipe = redis.pipeline(transaction=False)
    for offset, data in chunks:
        pipe.xadd(keys.out, {"d": data}, id=entry_id(offset), minid=str(max(0, end - window)),
                  approximate=True)
    await pipe.execute()


# -- range requests (answered by the producer) ---------------------------------------


async def request_range(redis: Any, keys: StreamKeys, start: int, end: int, *,
                        timeout: float = 5.0) -> bytes | None:
    """Bytes ``[start, end)`` (at most RANGE_MAX; fewer if not written yet)
    from the producer's disk; None when no producer answered in time."""
    reply = f"{keys.prefix}:rp:{secrets.token_hex(8)}"
    request = json.dumps({"from": start, "to": min(end, start + RANGE_MAX), "reply": reply})
    pipe = redis.pipeline(transaction=False)
    pipe.rpush(keys.requests, request)
    pipe.expire(keys.requests, 60)  # nobody serving: requests do not pile up
    await pipe.execute()
    got = await redis.blpop([reply], timeout=timeout)
    if got is None:
        return None
    data = await redis.lpop(reply)
    await redis.delete(reply)
    return data or b""


async def serve_ranges(redis: Any, keys: StreamKeys, read: Callable[[int, int], Awaitable[bytes]]) -> None:
    """Answer range requests forever with ``read(start, end)``."""
    while True:
        got = await redis.blpop([keys.requests], timeout=1)
        if got is None:
            continue
        try:
            request = json.loads(got[1])
            start, end, reply = int(request["from"]), int(request["to"]), str(request["reply"])
        except (ValueError, KeyError, TypeError):
            continue
        if not reply.startswith(keys.prefix + ":rp:") or start < 0 or end < start:
            continue
        data = await read(start, min(end, start + RANGE_MAX))
        pipe = redis.pipeline(transaction=True)
        pipe.rpush(reply, b"ok", data)  # one push: the reader's BLPOP then LPOP sees both
        pipe.expire(reply, 30)
        await pipe.execute()


# -- reading -----------------------------------------------------------------------------


class Gap(Exception):
    """Bytes [start, end) exist but neither Redis nor the producer could give them now."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"bytes {start}-{end} are not available right now")
        self.start, self.end = start, end


class StreamReader:
    """Follows one stream from ``offset``: every byte once, in order.

    :meth:`read` returns the next (offset, bytes) — live from Redis, or from
    the producer's disk when the reader is behind the window (a slow viewer
    is thereby cut over to catch-up without anyone buffering for it).
    """

    def __init__(self, redis: Any, keys: StreamKeys, offset: int = 0, *, range_timeout: float = 5.0) -> None:
        self.redis = redis
        self.keys = keys
        self.offset = offset
        self.range_timeout = range_timeout
        self.events_id = "$"
        self.backfilled = 0  # bytes that came from the producer's disk (for tests and bench)
        # False while self.offset may lie inside an entry (at the start, after a range fill).
        self._aligned = False

    async def start(self) -> None:
        """Remember where events are now (only later events are reported)."""
        last = await self.redis.xrevrange(self.keys.events, count=1)
        self.events_id = last[0][0].decode() if last else "0-0"

    async def read(self, *, block_ms: int = 1000, max_bytes: int = 1 << 20
                   ) -> tuple[list[tuple[int, bytes]], list[dict]]:
        """(chunks, events) after at most ``block_ms``; chunks are contiguous from :attr:`offset`."""
        streams = {self.keys.out: f"{self.offset}-0", self.keys.events: self.events_id}
        count = max(1, max_bytes // CHUNK)
        raw: list[tuple[bytes, dict]] = []
        if not self._aligned and self.offset > 0:
            # The entry that *contains* self.offset starts before it.
            first = await self.redis.xrevrange(self.keys.out, max=f"({self.offset}-0", count=1)
            if first and entry_offset(first[0][0]) + len(first[0][1][b"d"]) > self.offset:
                raw.append(first[0])
            self._aligned = True
        got = await self.redis.xread(streams, count=count, block=None if raw else block_ms) or []
        events = []
        for stream, entries in got:
            if stream in (self.keys.events, self.keys.events.encode()):
                for eid, fields in entries:
                    self.events_id = eid.decode()
                    events.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
            else:
                raw.extend(entries)
        chunks: list[tuple[int, bytes]] = []
        for eid, fields in raw:
            start, data = entry_offset(eid), fields[b"d"]
            if start + len(data) <= self.offset:
                continue  # already had it
            if start > self.offset:
                chunks += await self._fill(start)
                if start > self.offset:
                    break
            chunks.append((self.offset, data[self.offset - start:]))
            self.offset = start + len(data)
            self._aligned = True
        if not raw and not events:
            chunks += await self._catch_up_if_behind()
        return chunks, events

    async def _fill(self, end: int) -> list[tuple[int, bytes]]:
        """Read [offset, end) from the producer's disk (behind the window, or dropped XADDs)."""
        out = []
        while self.offset < end:
            data = await request_range(self.redis, self.keys, self.offset, end, timeout=self.range_timeout)
            if not data:
                raise Gap(self.offset, end)
            out.append((self.offset, data))
            self.offset += len(data)
            self.backfilled += len(data)
            self._aligned = False
        return out

    def skip_to(self, offset: int) -> None:
        """Give up on bytes before ``offset`` (after a :class:`Gap` the caller reported)."""
        self.offset = max(self.offset, offset)
        self._aligned = False

    async def _catch_up_if_behind(self) -> list[tuple[int, bytes]]:
        """Nothing new in Redis after self.offset, but the producer may be
        ahead (its XADDs failed while Redis was away): ask for the rest."""
        info = await producer_info(self.redis, self.keys)
        head = int(info.get("head", 0)) if info else 0
        if head <= self.offset:
            return []
        last = await self.redis.xrevrange(self.keys.out, count=1)
        if last and entry_offset(last[0][0]) >= self.offset:
            return []  # Redis has newer entries: the next XREAD gets them
        return await self._fill(min(head, self.offset + RANGE_MAX))


async def producer_info(redis: Any, keys: StreamKeys) -> dict | None:
    raw = await redis.get(keys.producer)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def tail(redis: Any, keys: StreamKeys, nbytes: int = 4096) -> tuple[int, bytes]:
    """(offset, bytes): the last ``nbytes`` in Redis (for previews), without the producer."""
    entries = await redis.xrevrange(keys.out, count=max(1, nbytes // 256 + 1))
    data = b""
    offset = 0
    for eid, fields in entries:
        offset = entry_offset(eid)
        data = fields[b"d"] + data
        if len(data) >= nbytes:
            break
    cut = max(0, len(data) - nbytes)
    return offset + cut, data[cut:]
