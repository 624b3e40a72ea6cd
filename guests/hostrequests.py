"""How the web tier asks a host agent to act, and how the agent listens.

The choice (issue 10 allows RQ jobs or a channel of the agent's): a
per-host Redis **list** the agent reads with BLPOP, holding only
``{"guest": <id>, "action": <name>, "request": <id>}``. Not RQ: an RQ job
would only hand the request to the agent anyway (the agent, not a job,
must be QEMU's parent), so the job layer would add a fork and a worker per
host for nothing.

The message is a wake-up call, not the request itself: the service writes
``pending_action`` and ``request_id`` into the guest row first (in the
same transaction that checks the state), and the agent acts on the row
only when the message's request id matches it. So a message lost to a
Redis restart loses nothing (the agent also scans its rows every few
seconds), a replayed or forged one does nothing, and the only thing read
from Redis is three well-formed fields: never a command, a path or text a
user typed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

ACTIONS = frozenset({"start", "stop", "force_off", "reboot", "delete"})
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Request:
    guest: int
    action: str
    request: str


def encode(request: Request) -> str:
    return json.dumps({"guest": request.guest, "action": request.action, "request": request.request})


def decode(raw: bytes | str) -> Request | None:
    """The request, or None for anything not exactly well-formed."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or set(data) != {"guest", "action", "request"}:
        return None
    guest, action, request = data["guest"], data["action"], data["request"]
    if type(guest) is not int or guest <= 0 or action not in ACTIONS:
        return None
    if not isinstance(request, str) or not _REQUEST_ID.fullmatch(request):
        return None
    return Request(guest, action, request)


def redis():
    import django_rq

    # The RQ connection carries the password settings (REDIS_PASSWORD).
    return django_rq.get_connection("default")


def send(queue: str, request: Request) -> None:
    """Best effort: the agent's periodic scan of its rows is the backstop."""
    try:
        redis().rpush(queue, encode(request))
    except Exception as exc:
        log.warning("could not wake host agent on %s (%s); it will find the request within seconds", queue, exc)
