"""Guest and kernel pages (no QEMU: no host agent runs, requests are only
recorded) and the guests websocket's refusals and live updates."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from guests.guest_stream import publish
from guests.models import Membership
from guests.vm_models import Guest, GuestEvent
from tests.guest_helpers import KERNELS, cleanup, fake_build, fake_out_path, make_host, short_dir
from tests.procs import start_daphne

needs_kernel = pytest.mark.skipif(not KERNELS, reason="needs a Debian kernel in /boot")


def host_base(host):
    from pathlib import Path

    return Path(host.run_dir).parent


@pytest.fixture
def base():
    path = short_dir()
    yield path
    cleanup(path)


@pytest.fixture
def guest_setup(lab, config, users, base):
    roots = base / "roots"
    (roots / "src").mkdir(parents=True)
    host = make_host("pages", base, roots=[str(roots)])
    build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
    return host, build


@needs_kernel
@pytest.mark.django_db
def test_create_start_and_refusals_through_the_pages(client_for, users, lab, guest_setup):
    host, build = guest_setup
    client = client_for(users["operator"])
    queued = fake_build(lab, build.revision, users["operator"], "", status="queued")
    resp = client.get(f"/labs/{lab.slug}/guests/new/?build={queued.pk}", follow=True)
    assert b"has not succeeded" in resp.content
    resp = client.get(f"/labs/{lab.slug}/guests/new/?config={build.revision.configuration.pk}")
    assert resp.status_code == 200 and f'value="{build.pk}"'.encode() in resp.content  # its latest succeeded build
    page = client.get(f"/labs/{lab.slug}/guests/new/?build={build.pk}")
    assert page.status_code == 200 and b"Memory (MiB)" in page.content
    form = {"build": build.pk, "name": "web1", "host": host.pk, "kernel": host.kernels.get().pk,
            "memory_mib": 512, "vcpus": 1, "extra_cmdline": "quiet"}
    # A newline in the command line: the form again with the reason, nothing created, no 500.
    bad = client.post(f"/labs/{lab.slug}/guests/new/", {**form, "extra_cmdline": "quiet\ninit=/bin/sh"})
    assert bad.status_code == 400 and b"without control characters" in bad.content
    assert not Guest.objects.exists()
    other_host = make_host("elsewhere", host_base(host))
    for bad in ({"memory_mib": "lots"}, {"memory_mib": "64"}, {"vcpus": "0"}, {"host": "999999"},
                {"kernel": other_host.kernels.get().pk}, {"name": "../etc"}, {"name": "x" * 100},
                {"extra_cmdline": "a\x00b"}, {"extra_cmdline": "y" * 5000}):
        resp = client.post(f"/labs/{lab.slug}/guests/new/", {**form, **bad})
        assert resp.status_code == 400, bad
    resp = client.post(f"/labs/{lab.slug}/guests/new/", {**form, "build": "999999"})
    assert resp.status_code == 404
    assert not Guest.objects.exists()
    resp = client.post(f"/labs/{lab.slug}/guests/new/", form)
    guest = Guest.objects.get(name="web1")
    assert resp.status_code == 302 and resp["Location"] == f"/labs/{lab.slug}/guests/{guest.pk}/"
    detail = client.get(resp["Location"])
    assert b'id="start-button"' in detail.content and b"created" in detail.content

    # A viewer sees everything but the buttons, and is refused server-side.
    viewer = client_for(users["viewer"])
    assert b"start-button" not in viewer.get(f"/labs/{lab.slug}/guests/{guest.pk}/").content
    assert viewer.post(f"/labs/{lab.slug}/guests/{guest.pk}/start/").status_code == 403
    assert Guest.objects.get(pk=guest.pk).state == "defined"

    client = client_for(users["operator"])
    client.post(f"/labs/{lab.slug}/guests/{guest.pk}/start/")
    client.post(f"/labs/{lab.slug}/guests/{guest.pk}/start/")  # double click
    row = Guest.objects.get(pk=guest.pk)
    assert row.state == "starting" and row.pending_action == "start"
    assert GuestEvent.objects.filter(guest=guest, kind="start").count() == 1
    listing = client.get(f"/labs/{lab.slug}/guests/")
    assert b"web1" in listing.content and b"starting" in listing.content
    # Stopping asks for an ACPI shutdown; a second stop says to force off instead.
    client.post(f"/labs/{lab.slug}/guests/{guest.pk}/stop/")
    page = client.get(f"/labs/{lab.slug}/guests/{guest.pk}/stop/", follow=False)
    assert page.status_code == 405
    resp = client.post(f"/labs/{lab.slug}/guests/{guest.pk}/stop/", follow=True)
    assert "Force off" in resp.content.decode()
    assert Guest.objects.get(pk=guest.pk).pending_action == "stop"


@needs_kernel
@pytest.mark.django_db
def test_kernel_page_validates_paths(client_for, users, lab, guest_setup, base):
    host, _ = guest_setup
    client = client_for(users["operator"])
    page = client.get(f"/labs/{lab.slug}/kernels/")
    assert page.status_code == 200
    assert b"CONFIG_VIRTIO_FS is a module" in page.content  # Debian's cannot boot a real nixos-flake guest
    not_kernel = base / "notakernel"
    not_kernel.write_text("hello")
    modules = str(KERNELS[-1].modules_dir)
    for image, mods, message in [
        (str(base / "missing"), modules, "does not exist"),
        (str(not_kernel), modules, "not a Linux kernel image"),
        (str(KERNELS[-1].image), str(base), "no modules.dep"),
        ("relative", modules, "absolute"),
    ]:
        resp = client.post(f"/labs/{lab.slug}/kernels/add/", {"host": host.pk, "name": "mine", "image": image,
                                                              "modules_dir": mods})
        assert resp.status_code == 400 and message in resp.content.decode(), (image, message)
    resp = client.post(f"/labs/{lab.slug}/kernels/add/", {"host": host.pk, "name": "mine",
                                                          "image": str(KERNELS[-1].image), "modules_dir": modules})
    assert resp.status_code == 302
    assert host.kernels.filter(name="mine", version=KERNELS[-1].version, added_by=users["operator"]).exists()


# -- websocket ---------------------------------------------------------------------


@pytest.fixture
def daphne(tmp_path):
    proc, port = start_daphne(tmp_path / "daphne.log")
    yield port, proc
    proc.stop()


def _ws(port, lab, client=None, origin=None, query=""):
    headers = {"Origin": origin or f"http://127.0.0.1:{port}"}
    if client is not None:
        headers["Cookie"] = f"sessionid={client.cookies['sessionid'].value}"
    return connect(f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{query}", open_timeout=10,
                   additional_headers=headers)


@needs_kernel
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_websocket_refusals_and_live_state(client_for, users, lab, guest_setup, daphne):
    from guests import guest_services

    host, build = guest_setup
    port, proc = daphne
    guest = guest_services.guest_create(lab=lab, build=build, name="live", host=host, kernel=host.kernels.get(),
                                        memory_mib=256, vcpus=1, user=users["operator"])
    with pytest.raises(InvalidStatus):  # anonymous
        with _ws(port, lab):
            pass
    with pytest.raises(InvalidStatus):  # outsider
        with _ws(port, lab, client_for(users["outsider"])):
            pass
    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null"):
        with pytest.raises(InvalidStatus):
            with _ws(port, lab, client_for(users["viewer"]), origin=origin):
                pass
    with _ws(port, lab, client_for(users["viewer"]), query=f"?guest={guest.pk}") as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "snapshot" and first["guests"][0]["state"] == "defined"
        assert first["guests"][0]["events"][0]["kind"] == "created"
        # What the agent does: change the row, publish.
        Guest.objects.filter(pk=guest.pk).update(state="running")
        publish(lab.pk, guest.pk)
        update = json.loads(ws.recv(timeout=5))
        assert update["guests"][0]["state"] == "running" and "stop" in update["guests"][0]["buttons"]
        # A lost message: the periodic re-read still brings the new state.
        Guest.objects.filter(pk=guest.pk).update(state="crashed")
        update = json.loads(ws.recv(timeout=5))
        assert update["guests"][0]["state"] == "crashed"
        Membership.objects.filter(lab=lab, user=users["viewer"]).delete()
        removed = time.monotonic()
        with pytest.raises(ConnectionClosed) as exc:
            while True:
                ws.recv(timeout=5)
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 4403
        assert time.monotonic() - removed < 1.5
    assert "Traceback" not in proc.output()
