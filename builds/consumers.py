"""The live build page's websocket: log lines, progress and status.

Every client gets each log line exactly once and in order: on connect it
joins the group *before* reading the stored log (so nothing falls between
the two), then tracks the next expected offset; a batch that starts past it
means the channel layer dropped messages, and the gap is read back from the
log file; a batch that ends before it is a duplicate and is skipped. When
the build ends, whatever is left in the file is sent before the final status.
"""

import asyncio
import time

from channels.db import database_sync_to_async

from guests.access import lab_role
from kdevweb.wsbase import ACCESS_RECHECK, CLOSE_FORBIDDEN, LiveJsonConsumer

from . import logstore
from .models import Build, Status
from .presenters import build_summary
from .stream import group_name
from .termsafe import terminal_safe

SEND_CHUNK = 1000


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
    async def connect(self):
        build_id = int(self.scope["url_route"]["kwargs"]["build_id"])
        build = await _allowed_build(self.scope["user"], build_id)
        if build is None:
            await self.close()  # authorise before accept(): refused handshake
            return
        self.build_id = build_id
        self.directory = build.workdir
        self.next = 0
        self.terminal = False
        self.last_live = time.monotonic()
        self.group = group_name(build_id)
        # Handlers and the queue poller both send lines; one at a time keeps
        # `self.next` honest.
        self.lock = asyncio.Lock()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.build_status({})
        self.poller = asyncio.create_task(self._poll()) if not self.terminal else None
        self.watcher = asyncio.create_task(self._watch_access())

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        for task in (getattr(self, "poller", None), getattr(self, "watcher", None)):
            if task is not None:
                task.cancel()

    async def _watch_access(self):
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

    def viewer_gone(self) -> None:
        self.terminal = True  # stops the poller

    async def _send_lines(self, start: int, lines: list[str], t: float | None = None) -> None:
        for i in range(0, len(lines), SEND_CHUNK):
            # Colours only: cursor, erase and OSC sequences from a builder
            # must not rewrite the page's terminal (builds/termsafe.py).
            chunk = [terminal_safe(line) for line in lines[i : i + SEND_CHUNK]]
            message = {"type": "lines", "start": start + i, "lines": chunk}
            if t is not None:
                message["t"] = t  # live lines only: when the worker read them
            await self.send_json(message)

    async def _backfill(self, end: int | None = None) -> None:
        lines = await asyncio.to_thread(logstore.read_lines, self.directory, self.next, end)
        if lines:
            await self._send_lines(self.next, lines)
            self.next += len(lines)

    async def build_lines(self, event):
        async with self.lock:
            await self._lines(event["start"], event["lines"], event.get("t"))

    async def _lines(self, start: int, lines: list[str], t: float | None = None) -> None:
        self.last_live = time.monotonic()
        end = start + len(lines)
        if end <= self.next:
            return  # already sent (from the file or an earlier message)
        if start > self.next:
            await self._backfill(start)  # messages were dropped: read them back
            if start > self.next:
                return  # not on disk yet either; the next message or status catches up
        skip = self.next - start
        await self._send_lines(self.next, lines[skip:], t)
        self.next = end

    async def build_progress(self, event):
        await self.send_json({"type": "progress", "progress": event["progress"]})

    async def build_status(self, event):
        async with self.lock:
            summary = await _summary(self.build_id)
            # Before the status, everything already stored: on a terminal
            # build that is the whole log, so the client can trust
            # "finished" to mean "you have every line".
            await self._backfill()
            self.terminal = summary["terminal"]
            await self.send_json({"type": "status", "build": summary})

    async def _poll(self):
        """Once a second: queue position while queued; while running, catch
        up from the log file if live batches stopped arriving (a Redis
        restart drops group memberships, so rejoin too)."""
        try:
            while not self.terminal:
                await asyncio.sleep(1.0)
                summary = await _summary(self.build_id)
                async with self.lock:
                    if summary["status"] == Status.QUEUED:
                        await self.send_json({"type": "status", "build": summary})
                    elif time.monotonic() - self.last_live > 2.0:
                        try:
                            await self.channel_layer.group_add(self.group, self.channel_name)
                        except Exception:
                            pass  # Redis still down: the file has the lines
                        await self._backfill()
                if summary["terminal"] and not self.terminal:
                    await self.build_status({})
        except asyncio.CancelledError:
            pass
