"""Deleting guests with or without their console transcripts, with the real
host agent (driven in this process, as tests/test_guests_boot.py's unit-ish
agent tests do) and the real ``manage.py consolerelay`` process.

Two guests boot Debian's kernel under TCG (a fake build whose initrd is
empty: the kernel's messages on ttyS0 are the transcript), then both are
deleted while running: the one kept keeps its transcript directory, the
other's is removed by the relay pool once its relays stopped; both lose
their Redis keys. A guest deleted while no relay process runs keeps its
marked transcripts until the next relay process starts.

Also the agent's other follow-up once a guest's processes are gone: the
restart of "switch build and restart" (guests/agent_followups.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from guests import guest_services as gs
from guests.console import transcript_dir
from guests.runtime import offsetstream, transcript
from guests.runtime.transcript_removal import MARKER
from guests.runtime.virtiofsd import VIRTIOFSD
from guests.vm_models import Guest, GuestEvent
from tests.guest_helpers import KERNELS, cleanup, fake_build, fake_out_path, make_host, short_dir
from tests.procs import manage, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

needs_host = pytest.mark.skipif(not KERNELS or os.geteuid() != 0 or not os.access(VIRTIOFSD, os.X_OK),
                                reason="needs a Debian kernel, virtiofsd and root")


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD)


def _keys(guest_id: int) -> list[bytes]:
    return list(_redis().scan_iter(f"kdevweb:console:{guest_id}.*"))


def _relay(host, tmp_path):
    return manage(["consolerelay", "--host", host.name], log=tmp_path / f"relay-{time.monotonic_ns()}.log")


@needs_host
def test_delete_keeps_or_removes_transcripts_without_racing_the_relay(users, lab, config, tmp_path):
    from guests.hostagent import HostAgent

    base = short_dir()
    relays = []
    try:
        host = make_host("tdel", base)
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), memory_mib=256, vcpus=1,
                    user=users["operator"])
        kept, gone = gs.guest_create(name="kept", **make), gs.guest_create(name="gone", **make)
        for guest in (kept, gone):
            for key in _keys(guest.pk):
                _redis().delete(key)
        relays.append(_relay(host, tmp_path))
        agent = HostAgent("tdel", stop_timeout=1.0, probe=False, store=base)
        for guest in (kept, gone):
            gs.guest_start(guest=guest, user=users["operator"])
        agent._scan()
        agent.wait_starts()
        dirs = {g.pk: transcript_dir(host, g.pk, "ttyS0") for g in (kept, gone)}

        def booted():
            agent._watch()
            return all(transcript.head(d) > 2000 and _redis().exists(offsetstream.console_keys(pk, "ttyS0").out)
                       for pk, d in dirs.items())
        wait_for(booted, 60, 0.1, "the kernels' messages in both transcripts")

        gs.guest_delete(guest=kept, user=users["operator"])
        gs.guest_delete(guest=gone, user=users["operator"], delete_transcripts=True)
        assert "console transcripts deleted" in GuestEvent.objects.filter(guest=gone, kind="delete").get().text

        def deleted():
            agent._scan()
            agent._watch()
            return not Guest.objects.filter(pk__in=dirs).exists()
        wait_for(deleted, 30, 0.05, "both guests forced off and deleted")
        assert not agent.managed
        # The relay pool's next sync (every 3 s) stops their relays, frees
        # the Redis keys, and only then removes the marked transcripts.
        wait_for(lambda: not _keys(kept.pk) and not _keys(gone.pk), 15, 0.1, "the deleted guests' Redis keys gone")
        wait_for(lambda: not dirs[gone.pk].parent.exists(), 10, 0.1, "the deleted transcripts gone")
        boots = transcript.boots(dirs[kept.pk])
        assert len(boots) == 1 and boots[0].end and boots[0].end > 2000
        assert b"Linux version" in transcript.read_range(dirs[kept.pk], 0)
        assert not (dirs[kept.pk].parent / MARKER).exists()
        assert not host.guest_run_dir(kept.pk).exists() and not host.guest_run_dir(gone.pk).exists()

        # No relay process runs while a guest is deleted with its
        # transcripts: they stay marked until the next one starts.
        relays[0].stop()
        late = gs.guest_create(name="late", **make)
        late_dir = transcript_dir(host, late.pk, "ttyS0")
        late_dir.mkdir(parents=True, exist_ok=True)
        (late_dir / "boot-000001.log").write_bytes(b"old boot\r\n")
        gs.guest_delete(guest=late, user=users["operator"], delete_transcripts=True)
        agent._scan()
        assert not Guest.objects.filter(pk=late.pk).exists()
        assert (late_dir.parent / MARKER).is_file() and (late_dir / "boot-000001.log").exists()
        relays.append(_relay(host, tmp_path))
        wait_for(lambda: not late_dir.parent.exists(), 30, 0.1, "the marked transcripts swept at the relay's start")
        assert dirs[kept.pk].exists()  # unmarked: kept
        assert "Traceback" not in "".join(r.output() for r in relays)
    finally:
        for relay in relays:
            relay.stop()
        cleanup(base)


@needs_host
def test_switch_build_and_restart_with_the_real_agent(users, lab, config):
    """A running guest switched to another build with a restart: shut down
    (this one ignores ACPI, so forced off after the agent's timeout), then
    started again by the agent, now on the new build's initrd."""
    from guests.hostagent import HostAgent

    base = short_dir()
    try:
        host = make_host("trb", base)
        old = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out-old"))
        new = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out-new"))
        guest = gs.guest_create(lab=lab, build=old, name="rb", host=host, kernel=host.kernels.get(),
                                memory_mib=256, vcpus=1, user=users["operator"])
        agent = HostAgent("trb", stop_timeout=1.0, probe=False, store=base)
        gs.guest_start(guest=guest, user=users["operator"])
        agent._scan()
        agent.wait_starts()
        first = Guest.objects.get(pk=guest.pk)
        assert first.state == "running" and str(base / "out-old") in Path(f"/proc/{first.qemu_pid}/cmdline").read_text()

        gs.guest_rollback(guest=first, build=new, user=users["operator"], restart=True)

        def restarted():
            agent._scan()
            agent._watch()
            agent.wait_starts(0.5)
            row = Guest.objects.get(pk=guest.pk)
            return row if row.state == "running" and row.qemu_pid != first.qemu_pid else None
        row = wait_for(restarted, 40, 0.05, "the guest running again")
        assert row.build_id == new.pk and not row.start_after_stop and not row.pending_action
        cmdline = Path(f"/proc/{row.qemu_pid}/cmdline").read_text()
        assert str(base / "out-new") in cmdline and str(base / "out-old") not in cmdline
        kinds = list(GuestEvent.objects.filter(guest=guest).order_by("time", "id").values_list("kind", flat=True))
        after = kinds[kinds.index("rollback"):]
        assert after[:2] == ["rollback", "shutdown"] and "force off" in after and after[-1] == "started", after
        assert GuestEvent.objects.filter(guest=guest, kind="start", text__contains="restart after switching").exists()
        gs.guest_delete(guest=row, user=users["operator"])
        wait_for(lambda: (agent._scan(), agent._watch(), not Guest.objects.filter(pk=guest.pk).exists())[-1],
                 20, 0.05, "the guest deleted")
    finally:
        cleanup(base)


@pytest.mark.skipif(not KERNELS or os.geteuid() != 0, reason="needs a Debian kernel and root")
def test_libvirt_guest_delete_marks_transcripts_and_keeps_disks_as_chosen(users, lab, tmp_path):
    """The libvirt side's delete (domain, overlays, serial log; extra disks
    only if asked) ends in the same removal as QEMU guests': here libvirt is
    not reachable, which is recorded and does not stop the delete."""
    import secrets
    import shutil

    from guests import libvirt_agent, services
    from guests.hostagent import HostAgent
    from tests.guest_helpers import GUEST_SETTINGS
    from tests.helpers import sample_settings

    base = short_dir()
    host = make_host(f"tdl{secrets.token_hex(3)}", base)
    host.libvirt_uri = "qemu:///nonexistent"
    host.save()
    try:
        config = services.configuration_create(
            lab=lab, name="lv", user=users["operator"],
            settings=sample_settings(backend="libvirt", profiles=[], testSuites=[], storage=GUEST_SETTINGS["storage"]))
        out = Path(fake_out_path(base / "out"))
        (out / "nixos.qcow2").write_bytes(b"")
        build = fake_build(lab, config.latest, users["operator"], str(out))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), memory_mib=256, vcpus=1,
                    user=users["operator"])
        agent = HostAgent(host.name, probe=False, store=base)
        for name, disks, transcripts in (("keepall", False, False), ("dropall", True, True)):
            guest = gs.guest_create(name=name, **make)
            d = libvirt_agent.guest_dir(host.name, guest.pk)
            d.mkdir(parents=True)
            for file in (f"build-{build.pk}.qcow2", "serial.log", "disk-scratch0.qcow2"):
                (d / file).write_bytes(b"x")
            tdir = transcript_dir(host, guest.pk, "ttyS0")
            tdir.mkdir(parents=True)
            (tdir / "boot-000001.log").write_bytes(b"boot\r\n")
            gs.guest_delete(guest=guest, user=users["operator"], delete_disks=disks, delete_transcripts=transcripts)
            agent._scan()
            assert not Guest.objects.filter(pk=guest.pk).exists()
            assert not (d / f"build-{build.pk}.qcow2").exists() and not (d / "serial.log").exists()
            assert (d / "disk-scratch0.qcow2").exists() is not disks
            assert (tdir.parent / MARKER).exists() is transcripts  # removed by the relay once it let go
            assert (tdir / "boot-000001.log").exists()
    finally:
        shutil.rmtree(libvirt_agent.IMAGE_ROOT / host.name, ignore_errors=True)
        cleanup(base)
