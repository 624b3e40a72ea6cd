"""One lossless byte stream per job, keyed by kind and id, in Redis.

A *job* is anything that produces an ordered byte stream many pages watch,
or just events pages wait for:

* kind ``console``, id ``<guest>.<console>``: a guest console; the producer
  is its relay (guests/runtime/relay.py), with an input path;
* kind ``build``, id ``<build id>``: a build's shown log; the producer is
  the worker running it (builds/stream.py), which also puts progress and
  status changes on the events stream;
* kind ``guests``, id ``<lab id>``: events only ("this guest's row
  changed"), written by whoever changes a guest (guests/guest_stream.py).

The producer appends chunks at known offsets; readers resume from any
offset. See docs/streams.md for how the consumers use it.

Keys (``P`` = ``kdevweb:<kind>:<id>``):

``P:out``       Redis Stream of output chunks. The entry ID *is* the chunk's
                offset (``<offset>-1``), field ``d`` the bytes, so "read from
                offset N" is an XREAD from ID ``N-0`` and no mapping is kept.
                Trimmed by offset (``XADD ... MINID ~``) to a window of bytes.
``P:ev``        Redis Stream of events (boot began/ended, input dropped;
                build progress and status; a guest changed).
``P:in``        Redis Stream of input for the producer (console keystrokes),
                read in order by the one producer.
``P:rq``        List of range requests: the producer answers from its disk
                (bytes older than the window), so readers never need to
                share a disk with it.
``P:producer``  The producer's heartbeat (JSON, expires): head offset, boot,
                whether its source is connected (consoles) or still
                running (builds).
``P:boots``     The producer's list of boots (JSON; consoles only).
``P:who``       Hash of the viewers (presence), ``P:answerer`` the viewer
                whose terminal answers queries (a lease), ``P:typed`` who
                typed last (consoles only).

Readers detect any gap by offset (a chunk that starts past what they have)
and fill it, first from a *local* reader when the caller has one (the
build log store on a web node that shares it; a finished build has no
producer any more), else with a range request to the producer. So a reader
that fell behind the window, a producer whose XADDs failed for a while, or
a reader on another machine all end up with every byte exactly once.

Streams of text (build logs) are cut at line boundaries by their producer
(:func:`split_lines`) and range readers, so a reader that filters per
chunk never sees half an escape sequence; consoles are cut anywhere.

Django-free: callers pass a ``redis.asyncio.Redis`` (or, for the few
helpers marked so, a synchronous ``redis.Redis``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

# Chunks are cut at this size: one XADD entry, one websocket frame.
CHUNK = 64 * 1024
# Bytes kept in Redis per stream; older bytes come from the producer's disk.
WINDOW = 8 * 1024 * 1024
# Largest range one request returns (a reader asks again for the rest).
RANGE_MAX = 4 * 1024 * 1024
# A text line longer than this is cut anyway (one entry, one frame).
LINE_MAX = 512 * 1024

# (start, end) -> bytes of [start, end), fewer when not all exist (yet).
RangeRead = Callable[[int, int], Awaitable[bytes]]


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


def build_keys(build_id: int) -> StreamKeys:
    return StreamKeys("build", str(int(build_id)))


def guests_keys(lab_id: int) -> StreamKeys:
    return StreamKeys("guests", str(int(lab_id)))


def entry_id(offset: int) -> str:
    # "-1": a stream ID may not be 0-0, and offset 0 is a real chunk.
    return f"{offset}-1"


def entry_offset(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])


def split(offset: int, data: bytes, size: int = CHUNK) -> list[tuple[int, bytes]]:
    return [(offset + i, data[i:i + size]) for i in range(0, len(data), size)]


def split_lines(offset: int, data: bytes, size: int = CHUNK) -> list[tuple[int, bytes]]:
    """Like :func:`split`, but pieces end at a newline: a piece is at most
    ``size`` bytes unless one line is longer (then that line, up to LINE_MAX)."""
    out = []
    i = 0
    while i < len(data):
        if len(data) - i <= size:
            cut = len(data)
        else:
            cut = data.rfind(b"\n", i, i + size) + 1
            if cut <= i:  # one long line
                nl = data.find(b"\n", i, i + LINE_MAX)
                cut = nl + 1 if nl >= 0 else min(len(data), i + LINE_MAX)
        out.append((offset + i, data[i:cut]))
        i = cut
    return out


def line_cut(data: bytes, *, complete: bool) -> bytes:
    """``data`` up to its last newline (what a range reader of a text log
    returns). ``complete``: the range was read in full, so a single line
    longer than it is returned cut rather than never."""
    cut = data.rfind(b"\n") + 1
    if cut:
        return data[:cut]
    return data if complete else b""


async def publish(redis: Any, keys: StreamKeys, chunks: list[tuple[int, bytes]], *,
                  window: int = WINDOW, stamp: float | None = None) -> None:
    """XADD ``chunks`` (offset, bytes), in order, in one pipeline.
    ``stamp``: when the producer got the bytes (field ``t``, for latency figures)."""
    if not chunks:
        return
    end = chunks[-1][0] + len(chunks[-1][1])
    extra = {"t": repr(stamp)} if stamp is not None else {}
    # "~" trims whole stream nodes (100 entries): cheap, but it keeps far
    # more than a small window (tests use a few KB to force range fills).
    approximate = window >= 1 << 20
    pipe = redis.pipeline(transaction=False)
    for offset, data in chunks:
        pipe.xadd(keys.out, {"d": data, **extra}, id=entry_id(offset), minid=str(max(0, end - window)),
                  approximate=approximate)
    await pipe.execute()


def add_event_sync(redis: Any, keys: StreamKeys, fields: dict[str, str], *, maxlen: int = 1000,
                   expire: int | None = None) -> None:
    """XADD one event with a *synchronous* client (Django views, the build
    worker's and host agent's threads); ``expire``: seconds the events
    stream lives after its last event (jobs that end)."""
    pipe = redis.pipeline(transaction=False)
    pipe.xadd(keys.events, fields, maxlen=maxlen, approximate=True)
    if expire is not None:
        pipe.expire(keys.events, expire)
    pipe.execute()


async def expire(redis: Any, keys: StreamKeys, seconds: int) -> None:
    """Let a finished job's keys go after ``seconds`` (readers then use their local reader)."""
    pipe = redis.pipeline(transaction=False)
    for key in (keys.out, keys.events, keys.requests, keys.producer):
        pipe.expire(key, seconds)
    await pipe.execute()


async def run_forever(loop: Callable[[], Awaitable[None]], what: str) -> None:
    """Run a producer's helper ``loop()`` (range server, heartbeat, ...);
    restart it a second after an error: Redis restarting must not cost a
    running build or a guest's console its producer."""
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            _log.warning("%s: %s failed (%s); restarting it", what, getattr(loop, "__name__", "helper"), exc)
            await asyncio.sleep(1.0)


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


async def serve_ranges(redis: Any, keys: StreamKeys, read: RangeRead) -> None:
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

    ``local`` (optional, may be set later): reads the producer's store where
    this machine has it. It is asked before any range request, and when
    Redis has nothing past :attr:`offset` — so a job whose producer is gone
    (a finished build, its stream keys expired) is read from it alone.
    """

    def __init__(self, redis: Any, keys: StreamKeys, offset: int = 0, *, range_timeout: float = 5.0,
                 local: RangeRead | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.offset = offset
        self.range_timeout = range_timeout
        self.local = local
        self.events_id = "$"
        self.backfilled = 0  # bytes that came from the producer's disk (for tests and bench)
        self.from_local = 0  # bytes that came from ``local``
        # Offset -> producer's stamp of the chunks the last read() got live.
        self.stamps: dict[int, float] = {}
        self._limit = offset + RANGE_MAX
        # False while self.offset may lie inside an entry (at the start, after a range fill).
        self._aligned = False

    async def start(self) -> None:
        """Remember where events are now (only later events are reported)."""
        last = await self.redis.xrevrange(self.keys.events, count=1)
        self.events_id = last[0][0].decode() if last else "0-0"

    async def read(self, *, block_ms: int | None = 1000, max_bytes: int = 1 << 20
                   ) -> tuple[list[tuple[int, bytes]], list[dict]]:
        """(chunks, events) after at most ``block_ms`` (None: do not wait);
        chunks are contiguous from :attr:`offset`."""
        streams = {self.keys.out: f"{self.offset}-0", self.keys.events: self.events_id}
        count = max(1, max_bytes // CHUNK)
        # Range fills stop near max_bytes too (at least a CHUNK, so a line
        # fits): a page with little room makes us read little.
        self._limit = self.offset + min(RANGE_MAX, max(max_bytes, CHUNK))
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
                events += self._events(entries)
            else:
                raw.extend(entries)
        chunks: list[tuple[int, bytes]] = []
        self.stamps = {}
        for eid, fields in raw:
            start, data = entry_offset(eid), fields[b"d"]
            if b"t" in fields and start >= self.offset:
                self.stamps[start] = float(fields[b"t"])
            if start + len(data) <= self.offset:
                continue  # already had it
            if start > self.offset:
                if start <= self._limit:
                    chunks += await self._fill(start)
                else:
                    chunks += await self._fill(self._limit, partial=True)
                if start > self.offset:
                    break
            chunks.append((self.offset, data[self.offset - start:]))
            self.offset = start + len(data)
            self._aligned = True
        if not raw and not events:
            chunks += await self._catch_up_if_behind()
        return chunks, events

    def _events(self, entries: list) -> list[dict]:
        events = []
        for eid, fields in entries:
            self.events_id = eid.decode()
            events.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
        return events

    async def read_events(self, *, block_ms: int | None = 1000) -> list[dict]:
        """Only the events after the last seen (a reader that has every byte already)."""
        got = await self.redis.xread({self.keys.events: self.events_id}, count=100, block=block_ms) or []
        return [event for _stream, entries in got for event in self._events(entries)]

    async def _fetch(self, start: int, end: int) -> bytes:
        """[start, end) or a prefix of it: local store first, else the producer."""
        if self.local is not None:
            data = await self.local(start, end)
            if data:
                self.from_local += len(data)
                return data
        info = await producer_info(self.redis, self.keys)
        if info is not None and info.get("running") is False:
            return b""  # the producer said it ended: nobody will answer
        data = await request_range(self.redis, self.keys, start, end, timeout=self.range_timeout) or b""
        self.backfilled += len(data)
        return data

    async def _fill(self, end: int, *, partial: bool = False) -> list[tuple[int, bytes]]:
        """Read [offset, end) from the producer's disk (behind the window, or
        dropped XADDs). ``partial``: ``end`` is only a budget, not a chunk
        boundary — one read is enough (a text reader stops at a line end
        before it; asking again for the rest of a line would cut it)."""
        out = []
        while self.offset < end:
            data = await self._fetch(self.offset, end)
            if not data:
                raise Gap(self.offset, end)
            out.append((self.offset, data))
            self.offset += len(data)
            self._aligned = False
            if partial:
                break
        return out

    def skip_to(self, offset: int) -> None:
        """Move past bytes before ``offset``: after a :class:`Gap` the caller
        reported, or bytes the caller delivered from elsewhere."""
        self.offset = max(self.offset, offset)
        self._aligned = False

    async def _catch_up_if_behind(self) -> list[tuple[int, bytes]]:
        """Nothing new in Redis after self.offset, but the producer may be
        ahead (its XADDs failed while Redis was away): ask for the rest."""
        if self.local is not None:
            data = await self.local(self.offset, self._limit)
            if data:
                start = self.offset
                self.offset += len(data)
                self.from_local += len(data)
                self._aligned = False
                return [(start, data)]
        info = await producer_info(self.redis, self.keys)
        head = int(info.get("head", 0)) if info else 0
        if head <= self.offset:
            return []
        last = await self.redis.xrevrange(self.keys.out, count=1)
        if last and entry_offset(last[0][0]) >= self.offset:
            return []  # Redis has newer entries: the next XREAD gets them
        return await self._fill(min(head, self._limit), partial=True)


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
