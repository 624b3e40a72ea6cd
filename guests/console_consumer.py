"""The console websocket: a guest console's bytes to the page, keys back.

Frames:

* server → page, binary: 8 bytes big-endian console offset, then terminal
  bytes (exactly the guest's, unfiltered: it is the guest's own console);
* server → page, JSON text: ``hello`` (role, may type, offsets), ``presence``
  (who watches, who typed last), ``event`` (boot began/ended, input
  dropped), ``refused`` (a viewer typed), ``skipped`` (bytes nobody could
  deliver, with their range), ``role`` (typing rights changed);
* page → server, binary: keystrokes (operators only; refused and logged
  for everyone else); JSON text: ``{"type": "ack", "offset": N}`` once the
  terminal has rendered up to N.

Flow control: the consumer pulls from Redis (guests.runtime.offsetstream)
only while fewer than ``HIGH_WATER`` bytes are unacknowledged, so a slow
page holds no server memory: it falls behind in Redis, and once behind the
stream's window its reader is served from the relay's transcript instead.

Same checks as the build stream: Origin (kdevweb/wsorigin.py) and session
before this runs, authorised before accept(), membership re-checked every
ACCESS_RECHECK s (removed: closed with 4403; demoted: typing stops), and the
session itself re-checked (logging out closes the user's consoles).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from contextlib import suppress

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from kdevweb.wsbase import ACCESS_RECHECK, CLOSE_BAD_FRAME, CLOSE_FORBIDDEN, FramesWithoutOrm, query_int
# Pull/ack flow control shared with the build log (one place for both).
from kdevweb.wsstream import HIGH_WATER, NO_CHANNEL_LAYER, Flow, Pump, redis_for_loop  # noqa: F401 - HIGH_WATER: tests

from .access import lab_role, role_at_least
from .console_models import ConsoleInput
from .models import Role
from .runtime import offsetstream
from .runtime.termreplies import strip_replies
from .vm_models import Guest

log = logging.getLogger("kdevweb.console")

CONSOLES = ("ttyS0", "hvc0")
PRESENCE_STALE = 5.0  # a presence entry not refreshed for this long is a dead connection
ANSWERER_LEASE_MS = 3000
AUDIT_FLUSH = 1.0
MAX_INPUT_FRAME = 64 * 1024
TYPED_EVERY = 1.0


def _find(user, lab_slug: str, guest_id: int) -> tuple[Guest, str] | None:
    """(guest, role) if the user may see the guest's console now, else None."""
    guest = Guest.objects.select_related("lab").filter(pk=guest_id, lab__slug=lab_slug).first()
    if guest is None:
        return None
    role = lab_role(user, guest.lab)
    return (guest, role) if role is not None else None


_access = database_sync_to_async(_find)


def _session_alive(session) -> bool:
    """False once the user logged out (the session row is gone) or the session was rotated."""
    key = getattr(session, "session_key", None)
    if not key:
        return False
    return session.exists(key)


@database_sync_to_async
def _recheck(user, session, lab_slug: str, guest_id: int) -> str | None:
    """The user's role now, or None once they may no longer watch (removed,
    logged out). One trip to the ORM's thread for both checks: while that
    thread runs Python it holds the GIL, and a keystroke arriving then waits
    for it (up to the 5 ms switch interval), so every page costs the typist
    as little of it as it can every ACCESS_RECHECK."""
    found = _find(user, lab_slug, guest_id) if _session_alive(session) else None
    return found[1] if found else None


@database_sync_to_async
def _audit(rows: list[ConsoleInput]) -> None:
    ConsoleInput.objects.bulk_create(rows)


class ConsoleConsumer(FramesWithoutOrm, AsyncWebsocketConsumer):
    channel_layer_alias = NO_CHANNEL_LAYER  # all of it comes from the offset stream

    async def connect(self):
        kwargs = self.scope["url_route"]["kwargs"]
        self.console = kwargs["console"]
        user = self.scope["user"]
        found = None
        if self.console in CONSOLES and user.is_authenticated:
            found = await _access(user, kwargs["lab_slug"], int(kwargs["guest_id"]))
        if found is None:
            await self.close()  # authorise before accept(): refused handshake
            return
        self.guest, self.role = found
        self.user = user
        self.keys = offsetstream.console_keys(self.guest.pk, self.console)
        self.conn_id = secrets.token_hex(8)
        self.redis = redis_for_loop()
        start = query_int(self.scope, "from")
        self.acked = self.sent = start if start is not None else -1
        self.typed_at = 0.0
        self.audit: list[ConsoleInput] = []
        self.tasks: list[asyncio.Task] = []
        await self.accept()
        if self.sent < 0:
            # No position: start at the beginning of what Redis keeps, the
            # page's scrollback (older bytes: transcript download).
            first = await self.redis.xrange(self.keys.out, count=1)
            self.acked = self.sent = offsetstream.entry_offset(first[0][0]) if first else 0
        info = await offsetstream.producer_info(self.redis, self.keys) or {}
        await self._send_json({"type": "hello", "role": self.role, "can_type": self.can_type,
                               "offset": self.sent, "head": info.get("head"),
                               "connected": bool(info.get("connected")), "user": user.get_username()})
        self.answerer = False
        await self._claim_answerer()
        await self._presence_update()
        self.flow = Flow(self.sent)
        self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._watch())]

    @property
    def can_type(self) -> bool:
        return role_at_least(self.role, Role.OPERATOR)

    async def disconnect(self, code):
        for task in getattr(self, "tasks", []):
            task.cancel()
        if not hasattr(self, "keys"):
            return
        with suppress(Exception):
            await self.redis.hdel(self.keys.who, self.conn_id)
            if (await self.redis.get(self.keys.answerer) or b"").decode() == self.conn_id:
                await self.redis.delete(self.keys.answerer)
        await self._flush_audit()

    # -- output ------------------------------------------------------------------------

    async def _pump(self):
        reader = offsetstream.StreamReader(self.redis, self.keys, self.flow.sent)
        await reader.start()

        async def send(offset: int, piece: bytes, _stamp: float | None) -> None:
            await self.send(bytes_data=offset.to_bytes(8, "big") + piece)

        async def events(events: list[dict]) -> None:
            for event in events:
                await self._send_json({"type": "event", "event": event})

        async def gap(gap: offsetstream.Gap) -> None:
            await self._send_json({"type": "skipped", "from": gap.start, "to": gap.end})

        try:
            await Pump(reader, self.flow, send=send, on_events=events, on_gap=gap).run()
        except (asyncio.CancelledError, Disconnected):
            pass
        except Exception:  # noqa: BLE001 - Redis gone: tell the page, it reconnects and resumes
            log.exception("console stream %s failed", self.keys.out)
            with suppress(Exception):
                await self.close(code=1011)

    # -- input -------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            await self._input(bytes_data)
            return
        try:
            message = json.loads(text_data)
            kind = message["type"]
        except (TypeError, ValueError, KeyError):
            await self.close(code=CLOSE_BAD_FRAME)
            return
        if kind == "ack" and self.flow.ack(message.get("offset")):
            pass
        elif kind != "ping":
            await self.close(code=CLOSE_BAD_FRAME)

    async def _input(self, data: bytes) -> None:
        if len(data) > MAX_INPUT_FRAME:
            await self.close(code=CLOSE_BAD_FRAME)
            return
        if not self.can_type:
            # The page of a viewer sends nothing; this came from elsewhere.
            log.warning("console input refused: %s (%s) on guest %s/%s, %d bytes", self.user.get_username(),
                        self.role, self.guest.pk, self.console, len(data))
            self._record(data, refused=True)
            await self._send_json({"type": "refused", "reason": f"your role in this lab is {self.role}: "
                                   "viewers cannot type into consoles"})
            return
        if not self.answerer:
            data = strip_replies(data)
        if not data:
            return
        # Awaited before the next frame is read: keystrokes reach :in in order.
        # Bounded: the relay keeps up with any typist; this only caps a stuck relay.
        entry = {"d": data, "u": self.user.get_username(), "c": self.conn_id}
        now = time.time()
        if now - self.typed_at < TYPED_EVERY:
            await self.redis.xadd(self.keys.input, entry, maxlen=10000, approximate=True)
        else:
            # "Who typed last" for the presence list: at most once a second,
            # in the keystroke's own round trip.
            self.typed_at = now
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self.keys.input, entry, maxlen=10000, approximate=True)
            pipe.set(self.keys.typed, json.dumps({"user": self.user.get_username(), "at": now}))
            await pipe.execute()
        self._record(data, refused=False)

    async def _claim_answerer(self) -> None:
        """Whether this page's terminal answers queries for the console: the
        first operator to take the lease keeps it (renewed every
        ACCESS_RECHECK) while connected; another takes it within the lease
        once it leaves. Kept in ``self.answerer`` so a keystroke costs no
        extra Redis round trip."""
        if not self.can_type:
            self.answerer = False
            return
        if await self.redis.set(self.keys.answerer, self.conn_id, nx=True, px=ANSWERER_LEASE_MS):
            self.answerer = True
            return
        self.answerer = (await self.redis.get(self.keys.answerer) or b"").decode() == self.conn_id
        if self.answerer:
            await self.redis.pexpire(self.keys.answerer, ANSWERER_LEASE_MS)

    def _record(self, data: bytes, *, refused: bool) -> None:
        last = self.audit[-1] if self.audit else None
        if last is not None and last.refused == refused:
            last.data = bytes(last.data) + data
            return
        self.audit.append(ConsoleInput(guest=self.guest, guest_name=self.guest.name, lab_id=self.guest.lab_id,
                                       user=self.user, username=self.user.get_username(), console=self.console,
                                       at=timezone.now(), data=data, refused=refused))

    async def _flush_audit(self) -> None:
        rows, self.audit = self.audit, []
        if rows:
            try:
                await _audit(rows)
            except Exception:  # noqa: BLE001 - the input went through; say that its record did not
                log.exception("console audit rows lost for guest %s", self.guest.pk)

    # -- access, presence ----------------------------------------------------------------

    async def _watch(self):
        last_flush = time.monotonic()
        try:
            while True:
                await asyncio.sleep(ACCESS_RECHECK)
                role = await _recheck(self.user, self.scope.get("session"), self.guest.lab.slug, self.guest.pk)
                if role is None:
                    await self._flush_audit()
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                if role != self.role:
                    self.role = role
                    if not self.can_type:
                        with suppress(Exception):
                            if (await self.redis.get(self.keys.answerer) or b"").decode() == self.conn_id:
                                await self.redis.delete(self.keys.answerer)
                    await self._send_json({"type": "role", "role": role, "can_type": self.can_type})
                await self._claim_answerer()
                await self._presence_update()
                if time.monotonic() - last_flush >= AUDIT_FLUSH:
                    last_flush = time.monotonic()
                    await self._flush_audit()
        except (asyncio.CancelledError, Disconnected):
            pass

    async def _presence_update(self) -> None:
        now = time.time()
        me = json.dumps({"user": self.user.get_username(), "role": self.role, "t": now})
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.who, self.conn_id, me)
        pipe.expire(self.keys.who, 60)
        pipe.hgetall(self.keys.who)
        pipe.get(self.keys.typed)
        _, _, who, typed = await pipe.execute()
        viewers, stale = presence(who, now)
        if stale:
            await self.redis.hdel(self.keys.who, *stale)
        typed_info = json.loads(typed) if typed else None
        state = {"type": "presence", "viewers": viewers, "typed": typed_info}
        if state != getattr(self, "_last_presence", None):
            self._last_presence = state
            await self._send_json(state)

    async def _send_json(self, message: dict) -> None:
        with suppress(Disconnected):
            await self.send(text_data=json.dumps(message))


def presence(who: dict, now: float) -> tuple[list[dict], list[bytes]]:
    """(viewers sorted by name with their connection count, stale connection ids)."""
    by_user: dict[str, dict] = {}
    stale = []
    for conn, raw in who.items():
        try:
            entry = json.loads(raw)
        except ValueError:
            stale.append(conn)
            continue
        if now - float(entry.get("t", 0)) > PRESENCE_STALE:
            stale.append(conn)
            continue
        item = by_user.setdefault(entry["user"], {"user": entry["user"], "role": entry["role"], "pages": 0})
        item["pages"] += 1
    return sorted(by_user.values(), key=lambda v: v["user"]), stale
