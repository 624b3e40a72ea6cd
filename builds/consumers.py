"""The live build page's websocket: the log, progress and status.

The log comes from the build's offset stream (builds/stream.py is the
producer; guests/runtime/offsetstream.py; docs/streams.md), read with a
StreamReader from the offset the page gives (``?from=N``, a byte offset in
the stored log; 0 by default: the whole log). A running build's older bytes
come from the worker by range request; once the build is terminal, from the
log store here (a finished build has no producer).

Frames, server → page:

* binary: 24-byte header — raw start and raw end offsets in the stored log
  (big-endian u64 each), then when the worker read the bytes from nix
  (f64, ms since the epoch; 0 for bytes read back from disk) — and the
  terminal bytes of those whole lines, filtered to colours only
  (builds/termsafe.py). Filtering changes lengths, so the page acknowledges
  and resumes by the raw offsets in the header, never by what it got;
* JSON text: ``status`` {build summary}, ``progress`` {NixProgress},
  ``skipped`` {from, to} (bytes nobody could deliver: never silent).

Page → server: ``{"type": "ack", "offset": N}`` (raw offset rendered);
flow control as the console's (kdevweb/wsstream.py). A terminal status is
sent only after every byte of the log, so "finished" means "you have every
byte".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
from contextlib import suppress

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async

from guests.access import lab_role
from guests.runtime import offsetstream
from kdevweb.wsbase import ACCESS_RECHECK, CLOSE_BAD_FRAME, CLOSE_FORBIDDEN, LiveJsonConsumer, query_int
from kdevweb.wsstream import NO_CHANNEL_LAYER, Flow, Pump, parse_control, redis_for_loop

from . import logstore
from .models import Build, Status
from .presenters import build_summary
from .stream import keys as stream_keys
from .termsafe import terminal_safe

log = logging.getLogger(__name__)

HEADER = struct.Struct(">QQd")
POLL = 1.0  # seconds between re-reads of the row (queue position; missed events)
# Characters terminal_safe may remove; a chunk without any is sent as it is.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def page_bytes(data: bytes) -> bytes:
    """Whole log lines as the page may show them: colours kept, every other
    control sequence removed (the stored log keeps the bytes)."""
    text = data.decode("utf-8", "replace")
    if not _UNSAFE.search(text):
        return data
    return "\n".join(terminal_safe(line) for line in text.split("\n")).encode("utf-8")


@database_sync_to_async
def _allowed_build(user, build_id: int) -> Build | None:
    build = Build.objects.select_related("lab").filter(pk=build_id).first()
    if build is None or lab_role(user, build.lab) is None:
        return None
    return build


@database_sync_to_async
def _summary(build_id: int) -> dict:
    build = Build.objects.select_related("revision__configuration", "created_by").get(pk=build_id)
    return build_summary(build)


class BuildConsumer(LiveJsonConsumer):
    # No channel layer: everything comes from the offset stream, and a
    # layer's receive loop would end the socket when Redis restarts.
    channel_layer_alias = NO_CHANNEL_LAYER

    async def connect(self):
        build_id = int(self.scope["url_route"]["kwargs"]["build_id"])
        build = await _allowed_build(self.scope["user"], build_id)
        if build is None:
            await self.close()  # authorise before accept(): refused handshake
            return
        # Not a position this page was given: start over.
        start = query_int(self.scope, "from") or 0
        self.build_id = build_id
        self.local = logstore.ByteReader(build.workdir)
        self.flow = Flow(start)
        self.reader = offsetstream.StreamReader(redis_for_loop(), stream_keys(build_id), start)
        self.terminal = False  # the viewer left: background tasks stop
        self.ending = False  # the build is terminal: drain the log, then say so
        self.finished = False  # the terminal status went out after the last byte
        self.dirty = False  # the row changed: re-read it
        self.refill = False  # a gap is being read again from the log store: not the end
        self.last_status: str | None = None
        await self.accept()
        summary = await _summary(build_id)
        if summary["terminal"]:
            self._end()
        else:
            await self._send_status(summary)
        self.tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._poll()),
                      asyncio.create_task(self._watch_access())]

    async def disconnect(self, code):
        self.terminal = True
        for task in getattr(self, "tasks", []):
            task.cancel()
        if hasattr(self, "local"):
            await asyncio.to_thread(self.local.close)

    def viewer_gone(self) -> None:
        self.terminal = True  # stops the background tasks

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        message = parse_control(text_data) if bytes_data is None else None
        if message is None or (message["type"] == "ack" and not self.flow.ack(message.get("offset"))):
            await self.close(code=CLOSE_BAD_FRAME)  # broken or hostile client: a code, no traceback

    # -- the log --------------------------------------------------------------------------

    def _end(self) -> None:
        """The build is terminal: its whole log is in the log store here."""
        self.ending = True

        async def read_local(start: int, end: int) -> bytes:
            return await asyncio.to_thread(self.local.read, start, end)

        self.reader.local = read_local

    async def _run(self) -> None:
        pump = Pump(self.reader, self.flow, send=self._send_bytes, on_events=self._events, on_gap=self._gap,
                    split=offsetstream.split_lines)
        started = False
        while not self.terminal:
            try:
                if not started:
                    await self.reader.start()
                    started = True
                if self.finished:
                    await self._events(await self.reader.read_events(block_ms=1000))
                    if self.dirty:
                        # A change after the end (closure size measured; a
                        # build the reaper gave up on that finished after
                        # all): drain what is new, then send it.
                        self.dirty, self.finished = False, False
                    continue
                nbytes, nevents = await pump.step(block_ms=None if self.ending else 1000)
                if self.refill:
                    # Nothing was read because the worker ended while we were
                    # behind it: the log store has those bytes; go again.
                    self.refill = False
                elif self.ending and not nbytes and not nevents:
                    await self._send_status(await _summary(self.build_id))
                    self.finished = True
                elif self.dirty:
                    await self._reread()
            except asyncio.CancelledError:
                raise
            except Disconnected:
                self.terminal = True
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the row poll still runs; retry
                log.warning("build %s stream: %s", self.build_id, exc)
                try:
                    if not (self.ending and not self.finished and await self._without_redis()):
                        await asyncio.sleep(1.0)
                except Disconnected:
                    self.terminal = True

    async def _without_redis(self) -> bool:
        """A terminal build while Redis is away: its log store has every byte,
        so drain it from there (the same offsets, flow control and frames)."""
        await self.flow.wait_room()
        start = self.reader.offset
        data = await asyncio.to_thread(self.local.read, start, start + max(self.flow.room(), offsetstream.CHUNK))
        for offset, piece in offsetstream.split_lines(start, data):
            await self._send_bytes(offset, piece, None)
            self.flow.sent = offset + len(piece)
        self.reader.skip_to(start + len(data))
        if not data:
            await self._send_status(await _summary(self.build_id))
            self.finished = True
        return True

    async def _send_bytes(self, offset: int, data: bytes, stamp: float | None) -> None:
        header = HEADER.pack(offset, offset + len(data), (stamp or 0.0) * 1000)
        await self.send(bytes_data=header + page_bytes(data))

    async def _gap(self, gap: offsetstream.Gap) -> bool:
        """The worker did not answer a range request: if that is because the
        build ended, the log store has the bytes (retry from it); else say so."""
        if not self.ending and (await _summary(self.build_id))["terminal"]:
            self._end()
            self.refill = True
            return False
        await self.send_json({"type": "skipped", "from": gap.start, "to": gap.end})
        return True

    async def _events(self, events: list[dict]) -> None:
        for event in events:
            if event.get("type") == "status":
                self.dirty = True
            elif event.get("type") == "progress" and not self.ending:
                with suppress(ValueError):
                    await self.send_json({"type": "progress", "progress": json.loads(event.get("p", ""))})

    async def _reread(self) -> None:
        self.dirty = False
        summary = await _summary(self.build_id)
        if summary["terminal"]:
            self._end()  # its status goes out once the log is drained
        else:
            await self._send_status(summary)

    async def _send_status(self, summary: dict) -> None:
        self.last_status = summary["status"]
        await self.send_json({"type": "status", "build": summary})

    # -- the row ---------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Every POLL s until the end: the queue position while queued; a
        status change the stream did not bring (Redis was away)."""
        try:
            while not self.terminal and not self.ending:
                await asyncio.sleep(POLL)
                summary = await _summary(self.build_id)
                if summary["status"] == Status.QUEUED and not summary["terminal"]:
                    await self._send_status(summary)
                elif summary["status"] != self.last_status:
                    self.dirty = True
        except asyncio.CancelledError:
            pass

    async def _watch_access(self) -> None:
        """Close the socket once the user may no longer see the build
        (removed from the lab, or the build deleted)."""
        try:
            while True:
                await asyncio.sleep(ACCESS_RECHECK)
                if await _allowed_build(self.scope["user"], self.build_id) is None:
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
        except asyncio.CancelledError:
            pass
