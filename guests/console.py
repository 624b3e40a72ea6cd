"""Consoles on the Django side: where transcripts live, which relays a
host runs, and what the guest pages show about a console (preview,
viewers, boots). The bytes themselves come from Redis and the relay
(guests/runtime/offsetstream.py), never from the relay's disk directly,
so a web node on another machine shows the same.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings

from builds.termsafe import terminal_safe

from .runtime import offsetstream
from .runtime.qemu import RunDir
from .runtime.relaypool import ConsoleSpec
from .vm_models import Guest, Host

CONSOLES = ("ttyS0", "hvc0")
PRESENCE_STALE = 5.0


def transcript_dir(host: Host, guest_id: int, console: str) -> Path:
    # Beside the guests' run dirs, not inside one: deleting a guest's
    # processes and sockets leaves its transcripts.
    return Path(host.run_dir) / "transcripts" / f"guest-{guest_id}" / console


def console_specs(host: Host, guest_ids: list[int] | None = None) -> list[ConsoleSpec]:
    """The consoles of every guest on ``host`` (or of ``guest_ids``): a QEMU
    guest's ttyS0 and hvc0 chardev sockets; a libvirt guest's serial line
    and virtio console through libvirt's console stream (by alias:
    serial0 is the serial line, console1 the virtio console), each with the
    log virtlogd writes."""
    from .libvirt_agent import console_log, domain_name, is_libvirt, serial_log

    guests = Guest.objects.filter(host=host).select_related("build__revision", "host")
    if guest_ids is not None:
        guests = guests.filter(pk__in=guest_ids)
    specs = []
    for guest in guests:
        if is_libvirt(guest):
            if host.libvirt_uri:
                for console, logfile, device in (("ttyS0", serial_log(guest), "serial0"),
                                                 ("hvc0", console_log(guest), "console1")):
                    specs.append(ConsoleSpec(guest.pk, console, None, logfile,
                                             transcript_dir(host, guest.pk, console),
                                             libvirt_uri=host.libvirt_uri, domain=domain_name(guest),
                                             device=device))
            continue
        run = RunDir(host.guest_run_dir(guest.pk))
        specs.append(ConsoleSpec(guest.pk, "ttyS0", run.serial_socket, run.serial_log,
                                 transcript_dir(host, guest.pk, "ttyS0")))
        specs.append(ConsoleSpec(guest.pk, "hvc0", run.console_socket, run.console_log,
                                 transcript_dir(host, guest.pk, "hvc0")))
    return specs


def redis_sync():
    import redis

    # Blocking reads below wait up to 10 s; a dead Redis must not hang a page longer.
    return redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD, socket_timeout=15)


def request_range_sync(client, keys: offsetstream.StreamKeys, start: int, end: int, *,
                       timeout: float = 10.0) -> bytes | None:
    """offsetstream.request_range for sync code (downloads)."""
    import secrets

    reply = f"{keys.prefix}:rp:{secrets.token_hex(8)}"
    pipe = client.pipeline(transaction=False)
    pipe.rpush(keys.requests, json.dumps({"from": start, "to": min(end, start + offsetstream.RANGE_MAX),
                                          "reply": reply}))
    pipe.expire(keys.requests, 60)
    pipe.execute()
    if client.blpop([reply], timeout=timeout) is None:
        return None
    data = client.lpop(reply)
    client.delete(reply)
    return data or b""


def console_overview(guests: list[Guest], *, lines: int = 8) -> dict[int, dict]:
    """{guest id: {"preview": last lines of ttyS0, "viewers": pages open on its consoles}}.

    From Redis only (one pipeline for all guests); empty values when Redis is away.
    """
    out = {g.pk: {"preview": "", "viewers": 0} for g in guests}
    if not guests:
        return out
    try:
        client = redis_sync()
        pipe = client.pipeline(transaction=False)
        for guest in guests:
            pipe.xrevrange(offsetstream.console_keys(guest.pk, "ttyS0").out, count=4)
            for console in CONSOLES:
                pipe.hvals(offsetstream.console_keys(guest.pk, console).who)
        results = pipe.execute()
    except Exception:  # noqa: BLE001 - a page must render without Redis
        return out
    now = time.time()
    for i, guest in enumerate(guests):
        entries, *whos = results[i * 3:(i + 1) * 3]
        data = b"".join(fields[b"d"] for _, fields in reversed(entries))
        out[guest.pk]["preview"] = preview_text(data, lines)
        count = 0
        for who in whos:
            for raw in who:
                try:
                    count += now - float(json.loads(raw).get("t", 0)) <= PRESENCE_STALE
                except (ValueError, AttributeError):
                    continue
        out[guest.pk]["viewers"] = count
    return out


def preview_text(data: bytes, lines: int) -> str:
    """The last ``lines`` lines of terminal output, control sequences removed."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    tail = [terminal_safe(line.rsplit("\r", 1)[-1]) for line in text.split("\n")][-lines:]
    # Colours too: the preview is plain text.
    return "\n".join(line.replace("\x1b", "") for line in _strip_sgr(tail)).strip("\n")


def _strip_sgr(lines: list[str]) -> list[str]:
    import re

    sgr = re.compile(r"\x1b\[[0-9;:]*m")
    return [sgr.sub("", line) for line in lines]


def console_boots(guest: Guest, console: str) -> list[dict]:
    """The boots of a console's transcript (newest first), as the relay last published them."""
    try:
        raw = redis_sync().get(offsetstream.console_keys(guest.pk, console).boots)
        boots = json.loads(raw) if raw else []
    except Exception:  # noqa: BLE001
        return []
    for boot in boots:
        boot["size"] = (boot["end"] - boot["start"]) if boot.get("end") is not None else None
        boot["started_at"] = datetime.fromtimestamp(boot["started"], tz=timezone.utc) if boot.get("started") else None
    return list(reversed(boots))
