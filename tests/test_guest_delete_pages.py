"""The guest delete confirmation, the disk table of libvirt guests and
"switch build and restart" through the pages and services (no QEMU: no
host agent runs, requests are only recorded; the agent's side of the
restart is driven by hand through its own _apply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from guests import guest_services as gs
from guests import services
from guests.runtime import offsetstream
from guests.runtime.state import Event
from guests.vm_models import Guest, GuestEvent, Host
from tests.guest_helpers import GUEST_SETTINGS, KERNELS, cleanup, fake_build, fake_out_path, make_host, short_dir
from tests.helpers import sample_settings

pytestmark = pytest.mark.skipif(not KERNELS, reason="needs a Debian kernel in /boot")

STORAGE = GUEST_SETTINGS["storage"]


@pytest.fixture
def base():
    path = short_dir()
    yield path
    cleanup(path)


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD)


def _guest(lab, users, base, *, backend="imageless", name="doomed", host=None):
    host = host or make_host("del", base)
    config = services.configuration_create(
        lab=lab, name=f"cfg-{name}", user=users["operator"],
        settings=sample_settings(backend=backend, profiles=[], testSuites=[], storage=STORAGE))
    out = Path(fake_out_path(base / f"out-{name}"))
    if backend == "libvirt":
        (out / "nixos.qcow2").write_bytes(b"")
        host.libvirt_uri = "qemu:///system"
        host.save()
    build = fake_build(lab, config.latest, users["operator"], str(out))
    guest = gs.guest_create(lab=lab, build=build, name=name, host=host, kernel=host.kernels.get(),
                            memory_mib=256, vcpus=1, disk_sizes={"/mnt/scratch": 64}, user=users["operator"])
    for key in _redis().scan_iter(f"kdevweb:console:{guest.pk}.*"):
        _redis().delete(key)
    return guest


@pytest.mark.django_db
def test_delete_confirmation_shows_what_goes_and_needs_explicit_choices(client_for, users, lab, base):
    guest = _guest(lab, users, base)
    disk = Path(guest.disks.get().path)
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"x" * 8192)
    # Two boots of ttyS0 as the relay publishes them: 1000 + 234 bytes.
    boots = [{"boot": 1, "start": 0, "end": 1000, "started": 1.0}, {"boot": 2, "start": 1000, "end": 1234}]
    _redis().set(offsetstream.console_keys(guest.pk, "ttyS0").boots, json.dumps(boots))
    Guest.objects.filter(pk=guest.pk).update(state="running")
    url = f"/labs/{lab.slug}/guests/{guest.pk}/delete/"
    operator = client_for(users["operator"])
    detail = operator.get(f"/labs/{lab.slug}/guests/{guest.pk}/").content.decode()
    assert f'action="{url}confirm/"' in detail and 'id="delete-button"' in detail

    page = operator.get(url + "confirm/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "is <strong class=\"state state-running\">running</strong>" in text and "forced off first" in text
    assert str(disk) in text and "64 MiB" in text and "8.0\xa0KB" in text  # the disk: path, size, on disk
    assert "1.2\xa0KB" in text and "<td>2</td>" in text  # ttyS0: 2 boots, 1234 bytes
    assert str(Path(guest.host.run_dir) / "transcripts" / f"guest-{guest.pk}" / "hvc0") in text
    assert 'value="keep" id="id_disks_0" required checked' in text.replace('\n', ' ') or (
        'name="disks" value="keep"' in text and "checked" in text)
    assert 'name="transcripts" value="keep"' in text

    # Viewers are refused server-side, both the page and the delete.
    viewer = client_for(users["viewer"])
    assert viewer.get(url + "confirm/").status_code == 403
    assert viewer.post(url, {"disks": "delete", "transcripts": "delete"}).status_code == 403
    operator = client_for(users["operator"])  # the same test client, logged in again
    assert operator.post(url + "confirm/", {"disks": "keep", "transcripts": "keep"}).status_code == 405

    # Bad input: the page again with the reason, nothing asked of the agent.
    for data, message in [({}, "Choose whether to keep or delete its disks."),
                          ({"disks": "keep"}, "Choose whether to keep or delete its console transcripts."),
                          ({"disks": "yes", "transcripts": "keep"}, "“yes” is neither"),
                          ({"disks": "keep", "transcripts": "../../etc"}, "“../../etc” is neither"),
                          ({"disks": ["keep", "delete"], "transcripts": "keep"}, "one answer for its disks")]:
        resp = operator.post(url, data)
        assert resp.status_code == 400 and message in resp.content.decode(), data
        row = Guest.objects.get(pk=guest.pk)
        assert row.pending_action == "" and not row.delete_disks and not row.delete_transcripts, data
    assert not GuestEvent.objects.filter(guest=guest, kind="delete").exists()

    resp = operator.post(url, {"disks": "keep", "transcripts": "delete"})
    assert resp.status_code == 302 and resp["Location"] == f"/labs/{lab.slug}/guests/"
    row = Guest.objects.get(pk=guest.pk)
    assert row.pending_action == "delete" and row.stopping_expected
    assert not row.delete_disks and row.delete_transcripts
    event = GuestEvent.objects.get(guest=guest, kind="delete")
    assert event.text == "disks kept, console transcripts deleted" and event.user == users["operator"]
    # Asked twice: the second is refused clearly, not a 500.
    again = operator.post(url, {"disks": "delete", "transcripts": "delete"}, follow=True)
    assert "being deleted" in again.content.decode()
    assert not Guest.objects.get(pk=guest.pk).delete_disks


@pytest.mark.django_db
def test_libvirt_guest_page_shows_its_real_disk_files(client_for, users, lab, base):
    from guests import libvirt_agent

    guest = _guest(lab, users, base, backend="libvirt", name="lv")
    d = libvirt_agent.guest_dir(guest.host.name, guest.pk)
    disk = guest.disks.get()
    assert disk.path == str(d / f"disk-{disk.serial}.qcow2")  # stored where the libvirt agent creates it
    # A row stored before (the QEMU guests' path) is shown where the file really is.
    type(disk).objects.filter(pk=disk.pk).update(path="/elsewhere/scratch0.qcow2")
    GuestEvent.objects.create(guest=guest, kind="disk", source="agent",
                              text=f"new overlay build-{guest.build_id}.qcow2 on the build's image")
    GuestEvent.objects.create(guest=guest, kind="disk", source="agent", text="new overlay build-99999.qcow2 on …")
    GuestEvent.objects.create(guest=guest, kind="disk", source="user", text="build-88888.qcow2")  # not the agent's
    client = client_for(users["viewer"])
    text = client.get(f"/labs/{lab.slug}/guests/{guest.pk}/").content.decode()
    table = text[text.index('id="disks"'):]
    table = table[:table.index("</table>")]
    assert str(d / f"disk-{disk.serial}.qcow2") in table and "/elsewhere" not in table
    assert str(d / f"build-{guest.build_id}.qcow2") in table and f"build #{guest.build_id} (current)" in table
    assert str(d / "build-99999.qcow2") in table and "88888" not in table
    assert str(Path(guest.host.run_dir)) not in table  # no QEMU-guest path
    # The confirmation says the overlays always go, the storage disk only if asked.
    page = client_for(users["operator"]).get(f"/labs/{lab.slug}/guests/{guest.pk}/delete/confirm/").content.decode()
    assert "Root disk overlays (always deleted)" in page and libvirt_agent.domain_name(guest) in page
    assert str(d / f"disk-{disk.serial}.qcow2") in page[page.index('id="delete-disks"'):]


@pytest.mark.django_db(transaction=True)  # the agent's restart sends its wake-up on commit
def test_switch_build_and_restart_of_a_running_guest(client_for, users, lab, base):
    from guests.hostagent import HostAgent

    guest = _guest(lab, users, base, name="rb")
    old = guest.build
    new = fake_build(lab, old.revision, users["operator"], str(fake_out_path(base / "out-new")))
    url = f"/labs/{lab.slug}/guests/{guest.pk}/rollback/"
    client = client_for(users["operator"])
    Guest.objects.filter(pk=guest.pk).update(state="running")
    page = client.get(f"/labs/{lab.slug}/guests/{guest.pk}/").content.decode()
    assert 'data-button="rollback-restart">' in page and 'data-button="rollback" hidden' in page

    # Without asking for the restart: refused while running, nothing changes.
    resp = client.post(url, {"build": new.pk}, follow=True)
    assert "Stop rb first, or switch builds with a restart" in resp.content.decode()
    # Starting or stopping: refused with or without restart.
    for state in ("starting", "stopping"):
        Guest.objects.filter(pk=guest.pk).update(state=state)
        resp = client.post(url, {"build": new.pk, "restart": "yes"}, follow=True)
        assert f"rb is {state}; switch builds once it is running or stopped" in resp.content.decode()
    Guest.objects.filter(pk=guest.pk).update(state="running")
    assert client_for(users["viewer"]).post(url, {"build": new.pk, "restart": "yes"}).status_code == 403
    client = client_for(users["operator"])
    for bad in ({"build": "x", "restart": "yes"}, {"build": "999999", "restart": "yes"}):
        assert "Choose a build" in client.post(url, bad, follow=True).content.decode()
    row = Guest.objects.get(pk=guest.pk)
    assert row.build_id == old.pk and row.state == "running" and not row.pending_action

    resp = client.post(url, {"build": new.pk, "restart": "yes"}, follow=True)
    assert f"Shutting rb down to restart it on build #{new.pk}" in resp.content.decode()
    row = Guest.objects.get(pk=guest.pk)
    assert row.build_id == new.pk and row.state == "stopping" and row.pending_action == "stop"
    assert row.start_after_stop and row.stopping_expected

    # The agent's side: the stop request taken, then the guest's exit recorded.
    agent = HostAgent(guest.host.name, probe=False, store=base)
    Guest.objects.filter(pk=guest.pk).update(pending_action="")  # _act clears it when it takes the request
    agent._apply(row, Event("exited", returncode=0))
    row = Guest.objects.get(pk=guest.pk)
    assert row.state == "starting" and row.pending_action == "start" and not row.start_after_stop
    start = GuestEvent.objects.filter(guest=guest, kind="start").first()
    assert start.text == f"build #{new.pk} (restart after switching builds)"
    # Once: a later exit does not start it again.
    Guest.objects.filter(pk=guest.pk).update(state="running", pending_action="")
    agent._apply(row, Event("exited", returncode=0))
    assert Guest.objects.get(pk=guest.pk).state == "stopped"

    # A restart that cannot happen (the new build collected meanwhile) is recorded, not retried.
    Guest.objects.filter(pk=guest.pk).update(state="running", start_after_stop=True, stopping_expected=True)
    (base / "out-new" / "initrd").unlink()
    agent._apply(row, Event("exited", returncode=0))
    row = Guest.objects.get(pk=guest.pk)
    assert row.state == "stopped" and not row.start_after_stop
    assert "not restarted:" in GuestEvent.objects.filter(guest=guest, kind="restart").first().text
    # And a running guest is refused a restart onto a build that cannot boot.
    Guest.objects.filter(pk=guest.pk).update(state="running", build=old)
    resp = client.post(url, {"build": new.pk, "restart": "yes"}, follow=True)
    assert "garbage-collected" in resp.content.decode()
    assert Guest.objects.get(pk=guest.pk).build_id == old.pk


@pytest.mark.django_db
def test_guest_without_disks_needs_only_the_transcripts_choice(client_for, users, lab, base):
    host = make_host("nd", base)
    config = services.configuration_create(lab=lab, name="nodisk", user=users["operator"],
                                           settings=sample_settings(profiles=[], testSuites=[]))
    build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
    guest = gs.guest_create(lab=lab, build=build, name="nd", host=host, kernel=host.kernels.get(),
                            memory_mib=256, vcpus=1, user=users["operator"])
    client = client_for(users["operator"])
    page = client.get(f"/labs/{lab.slug}/guests/{guest.pk}/delete/confirm/").content.decode()
    assert "It has no disks." in page and 'type="hidden" name="disks" value="keep"' in page
    assert "<td>ttyS0</td><td>0</td>" in page  # no relay published its transcripts, none on disk
    resp = client.post(f"/labs/{lab.slug}/guests/{guest.pk}/delete/", {"disks": "keep", "transcripts": "keep"})
    assert resp.status_code == 302
    row = Guest.objects.get(pk=guest.pk)
    assert row.pending_action == "delete" and not row.delete_transcripts
    assert Host.objects.filter(pk=host.pk).exists()
