"""The guest pages' websocket: each guest's whole visible state, live.

Same pattern as the build stream (builds/consumers.py): the Origin is
checked by kdevweb/wsorigin.py before this runs, the user is authorised
before accept() (refused handshake otherwise), membership is re-checked
every ACCESS_RECHECK seconds (closed with 4403 once removed), database
access goes through database_sync_to_async. Messages are full states, and
a snapshot goes out on connect and whenever the periodic re-read finds a
change, so a message the channel layer dropped (or a Redis restart) can
only delay an update, never leave a stale state.
"""

import asyncio

from channels.db import database_sync_to_async

from kdevweb.wsbase import ACCESS_RECHECK, CLOSE_FORBIDDEN, LiveJsonConsumer

from .access import lab_role
from .guest_stream import group_name
from .models import Lab
from .selectors import guest_summary
from .vm_models import Guest

RESNAPSHOT = 2.0


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
    async def connect(self):
        lab = await _allowed_lab(self.scope["user"], self.scope["url_route"]["kwargs"]["lab_slug"])
        if lab is None:
            await self.close()  # authorise before accept(): refused handshake
            return
        query = dict(part.split("=", 1) for part in self.scope.get("query_string", b"").decode(
            "ascii", "replace").split("&") if "=" in part)
        self.guest_id = int(query["guest"]) if query.get("guest", "").isdigit() else None
        self.lab = lab
        self.group = group_name(lab.pk)
        self.last: dict[int, dict] = {}
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._snapshot(force=True)
        self.watcher = asyncio.create_task(self._watch())

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        task = getattr(self, "watcher", None)
        if task is not None:
            task.cancel()

    async def _snapshot(self, force: bool = False) -> None:
        summaries = await _summaries(self.lab.pk, self.guest_id)
        current = {s["id"]: s for s in summaries}
        for gone in set(self.last) - set(current):
            await self.send_json({"type": "deleted", "id": gone})
        if force or current != self.last:
            await self.send_json({"type": "snapshot", "guests": summaries})
        self.last = current

    async def guest_changed(self, event):
        guest_id = event.get("guest")
        if self.guest_id is not None and guest_id != self.guest_id:
            return
        await self._snapshot()

    async def _watch(self):
        """Membership re-check every ACCESS_RECHECK s; a fresh read every RESNAPSHOT s
        (a Redis restart drops group memberships, so rejoin too)."""
        ticks = 0
        try:
            while True:
                await asyncio.sleep(ACCESS_RECHECK)
                if await _allowed_lab(self.scope["user"], self.lab.slug) is None:
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                ticks += 1
                if ticks * ACCESS_RECHECK >= RESNAPSHOT:
                    ticks = 0
                    try:
                        await self.channel_layer.group_add(self.group, self.channel_name)
                    except Exception:
                        pass  # Redis down: the database re-read still updates the page
                    await self._snapshot()
        except asyncio.CancelledError:
            pass
