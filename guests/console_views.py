"""The console page and transcript downloads.

Live bytes go over the websocket (guests/console_consumer.py); this page
only sets the terminal up. Downloads stream the transcript from the relay
(range requests through Redis: the web node need not share the relay's
disk), or from the local disk when the relay is not running here and the
transcript is (a stopped guest on a one-machine install).
"""

from __future__ import annotations

import json

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import selectors
from .access import lab_view, role_at_least
from .console import CONSOLES, console_boots, redis_sync, request_range_sync, transcript_dir
from .models import Role
from .runtime import offsetstream, transcript

DOWNLOAD_PAGE = offsetstream.RANGE_MAX


def _console_param(request) -> str | None:
    console = request.GET.get("console", "ttyS0")
    return console if console in CONSOLES else None


@lab_view(Role.VIEWER)
@require_GET
def guest_console(request, lab, guest_id):
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    console = _console_param(request)
    if console is None:
        return HttpResponse("There is no such console: choose ttyS0 or hvc0.", status=400,
                            content_type="text/plain")
    return render(request, "guests/console.html", {
        "lab": lab, "guest": guest, "console": console, "consoles": CONSOLES,
        "can_type": role_at_least(request.lab_role, Role.OPERATOR),
        "boots": console_boots(guest, console),
    })


def _int_param(request, name: str) -> int | None | str:
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit():
        return "bad"
    return int(raw)


def _remote_chunks(client, keys, start: int, end: int | None):
    """Bytes [start, end) from the relay (end None: up to what it has), a page at a time."""
    offset = start
    while end is None or offset < end:
        want = DOWNLOAD_PAGE if end is None else min(DOWNLOAD_PAGE, end - offset)
        data = request_range_sync(client, keys, offset, offset + want)
        if data:
            yield data
            offset += len(data)
        if not data or len(data) < want:
            return  # the head (or the relay stopped meanwhile): the file ends where the bytes do


@lab_view(Role.VIEWER)
@require_GET
def guest_console_transcript(request, lab, guest_id):
    """The transcript as a file: whole, or ``?from=&to=`` console offsets, or ``?boot=N``."""
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    console = _console_param(request)
    start, end, boot = _int_param(request, "from"), _int_param(request, "to"), _int_param(request, "boot")
    if console is None or "bad" in (start, end, boot):
        return HttpResponse("Give console=ttyS0 or hvc0, and from/to/boot as whole numbers.", status=400,
                            content_type="text/plain")
    keys = offsetstream.console_keys(guest.pk, console)
    if boot is not None:
        found = [b for b in console_boots(guest, console) if b["boot"] == boot]
        if not found:
            return HttpResponse(f"This console has no boot {boot}.", status=404, content_type="text/plain")
        start, end = found[0]["start"], found[0]["end"]
    start = start or 0
    client = redis_sync()
    try:
        raw = client.get(keys.producer)
    except Exception:  # noqa: BLE001 - Redis away: the local disk may still have it
        raw = None
    info = json.loads(raw) if raw else None
    local = transcript_dir(guest.host, guest.pk, console)
    if end is not None and end < start:
        return HttpResponse("'to' is before 'from'.", status=400, content_type="text/plain")
    if info is not None:
        # The relay's heartbeat head lags by up to a second: ask until it has no more.
        chunks = _remote_chunks(client, keys, start, end)
    elif local.is_dir():
        chunks = iter([transcript.read_range(local, start, end)])
    else:
        return HttpResponse("The console relay of this guest's host is not running, so its transcript cannot be "
                            "read now.", status=503, content_type="text/plain")
    response = StreamingHttpResponse(chunks, content_type="application/octet-stream")
    name = f"{guest.name}-{console}-{start}-{'end' if end is None else end}.log"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
