"""The guest pages' websocket: each guest's whole visible state, live.

Same pattern as the build stream (builds/consumers.py): the Origin is
checked by kdevweb/wsorigin.py before this runs, the user is authorised
before accept() (refused handshake otherwise), membership is re-checked
every ACCESS_RECHECK seconds (closed with 4403 once removed), database
access goes through database_sync_to_async. Changes arrive as events on the
lab's offset stream (guests/guest_stream.py), which the consumer XREAD
BLOCKs on. Messages are full states, and a snapshot goes out on connect,
on each event and whenever the periodic re-read finds a change, so an event
lost while Redis was down can only delay an update, never leave a stale
state.
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from kdevweb.wsbase import ACCESS_RECHECK, CLOSE_FORBIDDEN, LiveJsonConsumer, query_int
from kdevweb.wsstream import NO_CHANNEL_LAYER, redis_for_loop

from .access import lab_role
from .guest_stream import keys as stream_keys
from .models import Lab
from .selectors import guest_summary
from .runtime import offsetstream
from .vm_models import Guest

log = logging.getLogger(__name__)


@database_sync_to_async
def _allowed_lab(user, slug: str) -> Lab | None:
    lab = Lab.objects.filter(slug=slug).first()
    if lab is None or lab_role(user, lab) is None:
        return None
    return lab


@database_sync_to_async
def _summaries(lab_id: int, guest_id: int | None) -> list[dict]:
    qs = Guest.objects.filter(lab_id=lab_id).select_related("host", "kernel", "configuration", "build__revision",
                                                             "started_by")
    if guest_id is not None:
        qs = qs.filter(pk=guest_id)
    return [guest_summary(g, events=guest_id is not None) for g in qs]


class GuestsConsumer(LiveJsonConsumer):
    channel_layer_alias = NO_CHANNEL_LAYER  # events come from the lab's offset stream

    async def connect(self):
        lab = await _allowed_lab(self.scope["user"], self.scope["url_route"]["kwargs"]["lab_slug"])
        if lab is None:
            await self.close()  # authorise before accept(): refused handshake
            return
        self.guest_id = query_int(self.scope, "guest")
        self.lab = lab
        self.last: dict[int, dict] = {}
        self.lock = asyncio.Lock()  # the event listener and the re-read both snapshot
        # Positioned before the first snapshot: no change falls between the two.
        self.reader = offsetstream.StreamReader(redis_for_loop(), stream_keys(lab.pk))
        try:
            await self.reader.start()
        except Exception as exc:  # noqa: BLE001 - Redis down: the periodic re-read still runs
            log.warning("guest events of lab %s: %s", lab.pk, exc)
        await self.accept()
        await self._snapshot(force=True)
        self.tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._listen())]

    async def disconnect(self, code):
        for task in getattr(self, "tasks", []):
            task.cancel()

    async def _snapshot(self, force: bool = False) -> None:
        async with self.lock:
            summaries = await _summaries(self.lab.pk, self.guest_id)
            current = {s["id"]: s for s in summaries}
            for gone in set(self.last) - set(current):
                await self.send_json({"type": "deleted", "id": gone})
            if force or current != self.last:
                await self.send_json({"type": "snapshot", "guests": summaries})
            self.last = current

    async def _listen(self):
        """Re-read on each event about a guest this page shows."""
        try:
            while True:
                try:
                    events = await self.reader.read_events(block_ms=5000)
                except Exception as exc:  # noqa: BLE001 - Redis restarting: retry; _watch re-reads meanwhile
                    log.warning("guest events of lab %s: %s", self.lab.pk, exc)
                    await asyncio.sleep(1.0)
                    continue
                if any(self.guest_id is None or e.get("guest") == str(self.guest_id) for e in events):
                    await self._snapshot()
        except asyncio.CancelledError:
            pass

    async def _watch(self):
        """Membership re-check every ACCESS_RECHECK s; a fresh read every
        settings.GUESTS_RESNAPSHOT s (events lost while Redis was down)."""
        ticks = 0
        try:
            while True:
                await asyncio.sleep(ACCESS_RECHECK)
                if await _allowed_lab(self.scope["user"], self.lab.slug) is None:
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                ticks += 1
                if ticks * ACCESS_RECHECK >= settings.GUESTS_RESNAPSHOT:
                    ticks = 0
                    await self._snapshot()
        except asyncio.CancelledError:
            pass
