"""Telling open guest pages that a guest row changed (host agent side).

Messages to group ``guests-<lab id>``: ``guest.changed`` {guest}. The
consumer (guests/consumers.py) re-reads the row and sends its whole state,
so the message carries nothing but the id.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger("kdevweb.hostagent")


def group_name(lab_id: int) -> str:
    return f"guests-{lab_id}"


def publish(lab_id: int, guest_id: int) -> None:
    """Tell open pages the guest row changed (best effort: pages also re-read)."""
    try:
        async_to_sync(get_channel_layer().group_send)(group_name(lab_id),
                                                      {"type": "guest.changed", "guest": guest_id})
    except Exception as exc:
        log.warning("publish for guest %s failed: %s", guest_id, exc)
