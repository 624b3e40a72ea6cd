"""The console websocket over real daphne, a real relay and a fake QEMU
chardev (tests/fakechardev.py): refusals before accept, operators type,
viewers cannot (refused, logged, audited), one reply per terminal query,
resume from an offset, membership and logout re-checked live."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from guests.console_models import ConsoleInput
from guests.models import Membership
from guests.runtime import offsetstream
from guests.runtime.relay import ConsoleRelay, redis_client
from guests.vm_models import Guest, Host, Kernel
from tests.fakechardev import FakeChardev
from tests.guest_helpers import cleanup, short_dir
from tests.procs import start_daphne, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class RelayThread:
    """A relay in its own thread and event loop, as the host agent runs it."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.redis = redis_client(settings.REDIS_URL)
            self.relay = ConsoleRelay(redis=self.redis, reconnect_interval=0.05, **self.kwargs)
            self.task = asyncio.current_task()
            self.ready.set()
            await self.relay.run()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def stop(self):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


@pytest.fixture
def console(lab, config, users):
    from builds.models import Build, Status

    base = short_dir("kc-")
    host = Host.objects.create(name=f"h{secrets.token_hex(3)}", run_dir=str(base), accel="tcg")
    kernel = Kernel.objects.create(host=host, name="k", image="/boot/vmlinuz", modules_dir="/lib/modules/x",
                                   version="x")
    build = Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel",
                                 status=Status.SUCCEEDED, out_path="/nix/store/x")
    guest = Guest.objects.create(lab=lab, name="g1", configuration=config, build=build, host=host, kernel=kernel,
                                 state="running")
    chardev = FakeChardev(base / "serial.sock", base / "serial.log")
    # Stream keys per guest id: ids restart in each test database.
    redis = __import__("redis").Redis.from_url(settings.REDIS_URL)
    for key in redis.scan_iter(f"kdevweb:console:{guest.pk}.*"):
        redis.delete(key)
    relay = RelayThread(socket_path=base / "serial.sock", logfile=base / "serial.log",
                        transcript_dir=base / "transcripts" / "ttyS0",
                        keys=offsetstream.console_keys(guest.pk, "ttyS0"))
    chardev.wait_client()
    yield guest, chardev, relay
    relay.stop()
    chardev.stop()
    cleanup(base)


@pytest.fixture
def daphne(tmp_path):
    proc, port = start_daphne(tmp_path / "daphne.log")
    yield port
    proc.stop()


def _ws(port, guest, client=None, *, origin=None, console="ttyS0", query=""):
    headers = {"Origin": origin or f"http://127.0.0.1:{port}"}
    if client is not None:
        headers["Cookie"] = f"sessionid={client.cookies['sessionid'].value}"
    return connect(f"ws://127.0.0.1:{port}/ws/labs/{guest.lab.slug}/guests/{guest.pk}/console/{console}/{query}",
                   open_timeout=10, additional_headers=headers, max_size=None)


class Page:
    """What console.js keeps: bytes by offset, control messages, acks sent."""

    def __init__(self, ws):
        self.ws = ws
        self.data = bytearray()
        self.start = None
        self.messages: list[dict] = []

    def pump(self, until, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not until(self):
            frame = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(frame, bytes):
                offset = int.from_bytes(frame[:8], "big")
                if self.start is None:
                    self.start = offset
                assert offset == self.start + len(self.data), "gap or duplicate"
                self.data += frame[8:]
                self.ws.send(json.dumps({"type": "ack", "offset": offset + len(frame) - 8}))
            else:
                self.messages.append(json.loads(frame))
        return self

    def kinds(self):
        return [m["type"] for m in self.messages]


def test_refused_before_accept(client_for, users, console, daphne):
    guest, _, _ = console
    for client in (None, client_for(users["outsider"])):
        with pytest.raises(InvalidStatus):
            with _ws(daphne, guest, client):
                pass
    with pytest.raises(InvalidStatus):  # not a console
        with _ws(daphne, guest, client_for(users["viewer"]), console="ttyS1"):
            pass
    for origin in ("http://evil.example", f"http://127.0.0.1:{daphne + 1}"):
        with pytest.raises(InvalidStatus):
            with _ws(daphne, guest, client_for(users["viewer"]), origin=origin):
                pass


def test_operator_types_viewer_sees_and_cannot_type(client_for, users, console, daphne, client, django_user_model):
    from django.test import Client

    guest, chardev, _ = console
    operator, viewer = Client(), Client()
    operator.force_login(users["operator"])
    viewer.force_login(users["viewer"])
    token = secrets.token_hex(6)
    with _ws(daphne, guest, operator) as op_ws, _ws(daphne, guest, viewer) as view_ws:
        op, view = Page(op_ws), Page(view_ws)
        op.pump(lambda p: "hello" in p.kinds())
        view.pump(lambda p: "hello" in p.kinds())
        assert op.messages[0]["can_type"] and not view.messages[0]["can_type"]
        op_ws.send(f"echo {token}\r".encode())
        op.pump(lambda p: token.encode() in p.data)
        view.pump(lambda p: token.encode() in p.data)
        view_ws.send(b"reboot\r")
        view.pump(lambda p: "refused" in p.kinds())
        view.pump(lambda p: any(m["type"] == "presence" and len(m["viewers"]) == 2 for m in p.messages))
        view.pump(lambda p: any(m["type"] == "presence" and m["typed"] for m in p.messages))
        typed = [m["typed"]["user"] for m in view.messages if m["type"] == "presence" and m["typed"]]
        assert typed[-1] == "operator"
        time.sleep(0.3)
        assert b"reboot" not in chardev.received
        assert bytes(chardev.received) == f"echo {token}\r".encode()
    # Audit: the operator's bytes and the viewer's refused attempt (written
    # within a second, and when the socket closes).
    wait_for(lambda: ConsoleInput.objects.filter(guest=guest).count() >= 2, 5, what="audit rows")
    rows = {(r.username, r.refused): bytes(r.data) for r in ConsoleInput.objects.filter(guest=guest)}
    assert rows[("operator", False)] == f"echo {token}\r".encode()
    assert rows[("viewer", True)] == b"reboot\r"


def test_one_reply_per_query_with_two_operators(client_for, users, console, daphne):
    from django.test import Client

    guest, chardev, _ = console
    chardev.echo = False
    pages = []
    for _ in range(2):
        c = Client()
        c.force_login(users["operator"])
        pages.append(c)
    with _ws(daphne, guest, pages[0]) as first, _ws(daphne, guest, pages[1]) as second:
        Page(first).pump(lambda p: "hello" in p.kinds())
        Page(second).pump(lambda p: "hello" in p.kinds())
        chardev.emit(b"$ \x1b[6n")  # busybox ash asks at every prompt
        # Both xterm.js answer; keys typed by both still go through.
        first.send(b"\x1b[5;3R")
        second.send(b"\x1b[5;3R")
        second.send(b"ls\r")
        deadline = time.monotonic() + 5
        while b"ls\r" not in chardev.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    assert chardev.received.count(b"\x1b[5;3R") == 1
    assert b"ls\r" in chardev.received


def test_resume_from_offset_and_live_access_checks(client_for, users, lab, console, daphne):
    from django.test import Client

    guest, chardev, relay = console
    chardev.echo = False
    payload = bytes(range(256)) * 400
    chardev.emit(payload)
    viewer = Client()
    viewer.force_login(users["viewer"])
    with _ws(daphne, guest, viewer) as ws:
        page = Page(ws).pump(lambda p: len(p.data) >= len(payload))
        assert page.start == 0 and bytes(page.data) == payload
    # Reconnect from where the page was: only what came after.
    chardev.emit(b"after the reload\r\n")
    with _ws(daphne, guest, viewer, query=f"?from={len(payload)}") as ws:
        page = Page(ws).pump(lambda p: b"reload\r\n" in p.data)
        assert page.start == len(payload) and bytes(page.data) == b"after the reload\r\n"
        # Demoted... no: promoted viewer gets typing rights; removed: closed.
        Membership.objects.filter(lab=lab, user=users["viewer"]).update(role="operator")
        page.pump(lambda p: any(m["type"] == "role" and m["can_type"] for m in p.messages), timeout=3)
        Membership.objects.filter(lab=lab, user=users["viewer"]).delete()
        removed = time.monotonic()
        with pytest.raises(ConnectionClosed) as exc:
            page.pump(lambda p: False, timeout=5)
        assert exc.value.rcvd.code == 4403 and time.monotonic() - removed < 1.5
    # Logging out closes the user's consoles.
    operator = Client()
    operator.force_login(users["operator"])
    with _ws(daphne, guest, operator) as ws:
        page = Page(ws).pump(lambda p: "hello" in p.kinds())
        operator.logout()
        with pytest.raises(ConnectionClosed) as exc:
            page.pump(lambda p: False, timeout=5)
        assert exc.value.rcvd.code == 4403


def test_console_page_and_transcript_downloads(client_for, users, console, daphne):
    guest, chardev, relay = console
    chardev.echo = False
    chardev.emit(b"first boot\r\n")
    wait_for(lambda: relay.relay.transcript.offset == 12, 5, what="first boot bytes")
    chardev.restart()  # a new QEMU: boot 2
    chardev.wait_client()
    chardev.emit(b"second boot\r\n")
    wait_for(lambda: relay.relay.transcript.offset == 25, 5, what="second boot bytes")
    client = client_for(users["viewer"])
    base = f"/labs/{guest.lab.slug}/guests/{guest.pk}/console/"
    page = client.get(base + "?console=hvc0")
    html = page.content.decode()
    assert page.status_code == 200 and "kdevweb/console.js" in html and "addon-search.js" in html
    assert f"/ws/labs/{guest.lab.slug}/guests/{guest.pk}/console/hvc0/" in html
    assert "<script>" not in html  # CSP: no inline scripts
    assert client.get(base + "?console=ttyS9").status_code == 400
    whole = client.get(base + "transcript/?console=ttyS0")
    assert b"".join(whole.streaming_content) == b"first boot\r\nsecond boot\r\n"
    assert whole["Content-Disposition"].startswith("attachment;")
    part = client.get(base + "transcript/?console=ttyS0&from=6&to=16")
    assert b"".join(part.streaming_content) == b"boot\r\nseco"
    boot1 = client.get(base + "transcript/?console=ttyS0&boot=1")
    assert b"".join(boot1.streaming_content) == b"first boot\r\n"
    assert client.get(base + "transcript/?console=ttyS0&boot=7").status_code == 404
    assert client.get(base + "transcript/?console=ttyS0&from=-1").status_code == 400
    # The guest page: preview, the console link, the boots.
    detail = client.get(f"/labs/{guest.lab.slug}/guests/{guest.pk}/").content.decode()
    assert "second boot" in detail and 'id="console-link"' in detail and "2 boots" in detail
    listing = client.get(f"/labs/{guest.lab.slug}/guests/").content.decode()
    assert "second boot" in listing


def test_slow_page_is_not_buffered_for_and_demotion_stops_typing(client_for, users, lab, console, daphne):
    """A page that stops acknowledging gets at most the high-water mark;
    the rest waits in Redis / the transcript and arrives, exact, once it acks."""
    from django.test import Client

    from guests.console_consumer import HIGH_WATER

    guest, chardev, relay = console
    chardev.echo = False
    client = Client()
    client.force_login(users["operator"])
    payload = os.urandom(4 * 1024 * 1024)
    with _ws(daphne, guest, client) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "hello"
        chardev.emit(payload)
        wait_for(lambda: relay.relay.transcript.offset == len(payload), 10, what="the burst in the transcript")
        got = bytearray()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                frame = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            if isinstance(frame, bytes):
                got += frame[8:]
        assert HIGH_WATER // 2 <= len(got) <= HIGH_WATER + 64 * 1024, len(got)
        page = Page(ws)
        page.start, page.data = 0, got
        ws.send(json.dumps({"type": "ack", "offset": len(got)}))
        page.pump(lambda p: len(p.data) >= len(payload), timeout=20)
        assert bytes(page.data) == payload
        # Demoted to viewer while connected: typing refused within a second.
        Membership.objects.filter(lab=lab, user=users["operator"]).update(role="viewer")
        page.pump(lambda p: any(m["type"] == "role" and not m["can_type"] for m in p.messages), timeout=3)
        ws.send(b"typed after demotion\r")
        page.pump(lambda p: "refused" in p.kinds(), timeout=3)
    time.sleep(0.3)
    assert b"after demotion" not in chardev.received
