"""Telling open guest pages that a guest row changed (host agent side).

Each lab has an events-only offset stream (kind ``guests``, id ``<lab id>``;
guests/runtime/offsetstream.py): an event ``{guest: <id>}`` says "this row
changed". The consumer (guests/consumers.py) XREAD BLOCKs on it and re-reads
the rows, so the event carries nothing but the id; it also re-reads every
few seconds, so an event lost while Redis was down only delays an update.
"""

from __future__ import annotations

import logging

from guests.runtime import offsetstream
from kdevweb.wsstream import sync_redis

log = logging.getLogger("kdevweb.hostagent")

# Events kept per lab: pages read them live, none replays old ones.
KEEP_EVENTS = 1000


def keys(lab_id: int) -> offsetstream.StreamKeys:
    return offsetstream.guests_keys(lab_id)


def publish(lab_id: int, guest_id: int) -> None:
    """Tell open pages the guest row changed (best effort: pages also re-read)."""
    try:
        offsetstream.add_event_sync(sync_redis(), keys(lab_id), {"guest": str(int(guest_id))},
                                    maxlen=KEEP_EVENTS)
    except Exception as exc:  # noqa: BLE001 - Redis down: the pages' periodic re-read catches up
        log.warning("publish for guest %s failed: %s", guest_id, exc)
