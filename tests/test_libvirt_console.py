"""libvirt guests' console: the relay holds libvirt's console stream.

End to end with the real libvirtd (qemu:///system, TCG) and the stand-in's
disk image: service -> host agent -> domain; ``manage.py consolerelay``
relays its serial console (libvirt stream + the log virtlogd writes) to
Redis; daphne's console websocket: the operator runs ``echo <token>`` and
sees it (on the serial line and on the virtio console), a viewer's typing is refused, the transcript has the boot, and a
relay restart while the guest runs loses nothing. Plus the log follower
across virtlogd's rotations, with plain files.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid

import pytest

from guests import guest_services as gs
from guests import libvirt_agent
from guests.console import console_specs, transcript_dir
from guests.runtime import transcript
from guests.runtime.logfollow import LogFollower
from guests.vm_models import Guest, Host
from tests.guest_helpers import cleanup, make_host, short_dir
from tests.libvirt_helpers import URI
from tests.procs import manage, start_daphne, wait_for
from tests.test_console_ws import Page, _ws
from tests.test_libvirt_guests import agent, build_image, fake_build, lv_settings, need_libvirt_guests, wait_state


def test_log_follower_reads_across_rotations_and_resumes_by_inode(tmp_path):
    """virtlogd renames serial.log to serial.log.0 at max_size and starts a
    new one: the follower reads on into it, and a new follower (a restarted
    relay) finds its file again among the backups."""
    log = tmp_path / "serial.log"
    state = tmp_path / "log-position.json"
    log.write_bytes(b"one ")
    f = LogFollower(log, rotates=True, state_file=state)
    assert f.open("boot-a", 0)
    assert f.read() == b"one "
    with open(log, "ab") as fh:
        fh.write(b"two ")
    os.rename(log, log.with_name("serial.log.0"))  # rotation
    log.write_bytes(b"three ")
    assert f.read() == b"two three "
    f.close()
    # Restarted relay at boot position 10 ("one two th"); meanwhile two more rotations.
    with open(log, "ab") as fh:
        fh.write(b"four ")
    os.rename(log.with_name("serial.log.0"), log.with_name("serial.log.1"))
    os.rename(log, log.with_name("serial.log.0"))
    log.write_bytes(b"five ")
    g = LogFollower(log, rotates=True, state_file=state)
    assert g.open("boot-a", 10)
    assert g.read() == b"ree four five " and g.lost == 0
    g.close()
    # Another boot (the state names boot-a): the current file from its start.
    h = LogFollower(log, rotates=True, state_file=state)
    assert h.open("boot-b", 0) and h.read() == b"five "
    h.close()
    # QEMU's logfile= does not rotate: a new file at the path is not followed.
    q = LogFollower(tmp_path / "q.log")
    (tmp_path / "q.log").write_bytes(b"boot 1")
    assert q.open("k", 0) and q.read() == b"boot 1"
    os.unlink(tmp_path / "q.log")
    (tmp_path / "q.log").write_bytes(b"boot 2")
    assert q.read() == b"" and q.replaced()
    q.close()


def test_log_follower_wakes_on_the_file_a_rotation_creates(tmp_path):
    """The wake-up follows the name: after a rotation, the first write to
    the new file wakes the relay (inotify on the directory, filtered by
    name); writes to other files there (the overlays) do not."""
    import asyncio

    log = tmp_path / "serial.log"
    log.write_bytes(b"a")

    async def woken(event: asyncio.Event, action) -> bool:
        event.clear()
        action()
        try:
            await asyncio.wait_for(event.wait(), 2)
            return True
        except TimeoutError:
            return False

    def append(path, data):
        with open(path, "ab") as fh:
            fh.write(data)

    async def main():
        event = asyncio.Event()
        f = LogFollower(log, rotates=True, state_file=tmp_path / "state.json")
        assert f.open("k", 0) and f.watch(event.set)
        assert f.read() == b"a"
        assert await woken(event, lambda: append(log, b"b"))
        os.rename(log, log.with_name("serial.log.0"))
        assert await woken(event, lambda: append(log, b"c"))  # the new file, never watched by inode
        assert f.read() == b"bc"
        assert not await woken(event, lambda: append(tmp_path / "build-1.qcow2", b"disk"))
        f.close()

    asyncio.run(main())


def _prompt_echo(page: Page, token: str, timeout: float = 60) -> None:
    """Run ``echo <token>`` and wait for its output line (not the echo of the typing)."""
    page.ws.send(f"echo {token}-$((6*7))\r".encode())
    page.pump(lambda p: f"{token}-42".encode() in p.data, timeout=timeout)


def _source_closes_cleanly(spec) -> None:
    """The source on its own: the stream opens (the relay has let go), and
    closing it ends its reader thread (a relay stopped for a deleted guest
    leaves no thread blocked in recv)."""
    import asyncio

    async def main():
        source = spec.source()
        conn = await source.connect()
        assert await source.instance_key() == conn.key
        conn.close()
        await asyncio.to_thread(conn._reader.join, 5)
        assert not conn._reader.is_alive()
        while await conn.read():  # what the guest printed meanwhile, then the end
            pass
        source.close()

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_libvirt_console_end_to_end(tmp_path, users, lab, client_for):
    need_libvirt_guests()
    import subprocess

    from django.test import Client

    from guests import services

    base = short_dir("klc-")
    host_name = f"lvc{uuid.uuid4().hex[:4]}"
    procs = []
    guest = None
    try:
        host = make_host(host_name, base)
        Host.objects.filter(pk=host.pk).update(libvirt_uri=URI)
        host.refresh_from_db()
        op = users["operator"]
        config = services.configuration_create(lab=lab, name="lvc", user=op, settings=lv_settings("lvc"))
        build = fake_build(lab, config.latest, op, build_image(base / "b", config.latest.settings))
        guest = gs.guest_create(lab=lab, build=build, name="con", host=host, kernel=host.kernels.get(),
                                memory_mib=384, vcpus=1, user=op)
        spec = [s for s in console_specs(host) if s.guest_id == guest.pk]
        name = libvirt_agent.domain_name(guest)
        assert [(s.console, s.domain, s.device) for s in spec] == [("ttyS0", name, "serial0"),
                                                                  ("hvc0", name, "console1")]

        procs.append(agent(host_name, tmp_path))
        relay_log = tmp_path / "relay.log"
        procs.append(manage(["consolerelay", "--host", host_name], log=relay_log))
        daphne, port = start_daphne(tmp_path / "daphne.log")
        procs.append(daphne)
        wait_for(lambda: Host.objects.get(pk=host.pk).agent_seen, 60, what="the agent's heartbeat")
        gs.guest_start(guest=Guest.objects.get(pk=guest.pk), user=op)
        wait_state(guest, "running", 60)

        # The guest page's Console tab and the console page open for it.
        viewer_client = client_for(users["viewer"])
        page = viewer_client.get(f"/labs/{lab.slug}/guests/{guest.pk}/console/?console=ttyS0")
        assert page.status_code == 200 and "tab-hvc0" in page.content.decode()
        detail = viewer_client.get(f"/labs/{lab.slug}/guests/{guest.pk}/").content.decode()
        assert 'id="console-link"' in detail

        operator, viewer = Client(), Client()
        operator.force_login(op)
        viewer.force_login(users["viewer"])
        with _ws(port, guest, operator) as op_ws:
            op_page = Page(op_ws)
            # The whole boot from the start: the bootloader, then the shell's prompt.
            op_page.pump(lambda p: b"SYSLINUX" in p.data, timeout=90)
            op_page.pump(lambda p: b"ready (user" in p.data, timeout=180)
            time.sleep(1.0)
            # The viewer joins now (a page left unread meanwhile would miss its pings).
            view_ws = _ws(port, guest, viewer).__enter__()
            view_page = Page(view_ws)
            op_ws.send(b"\x1b[1;1R\r")  # ash's cursor query, as the answering xterm.js would
            token = uuid.uuid4().hex[:12]
            _prompt_echo(op_page, token)
            view_page.pump(lambda p: f"{token}-42".encode() in p.data, timeout=30)
            # Keystroke -> echo through the stream and virtlogd's log: prompt
            # (inotify on the log, not the relay's 1 s safety-net look).
            trips = []
            for ch in "kdevwebkdevwebkdevweb":
                have, t = len(op_page.data), time.monotonic()
                op_ws.send(ch.encode())
                op_page.pump(lambda p: ch.encode() in p.data[have:], timeout=10)
                trips.append(time.monotonic() - t)
            op_ws.send(b"\x15")  # ctrl-U: the line is cleared again
            trips.sort()
            print(f"libvirt console keystroke echo: p50 {trips[len(trips) // 2] * 1000:.1f} ms, "
                  f"max {trips[-1] * 1000:.1f} ms (n={len(trips)})")
            assert trips[len(trips) // 2] < 0.5, trips
            # A viewer's typing is refused and never reaches the guest.
            view_ws.send(b"echo viewer-$((5*5))\r")
            view_page.pump(lambda p: "refused" in p.kinds(), timeout=10)
            view_ws.close()
            op_offset = op_page.start + len(op_page.data)
        # The virtio console (hvc0, libvirt's console1) has its own shell.
        with _ws(port, guest, operator, console="hvc0") as hvc_ws:
            hvc = Page(hvc_ws)
            hvc.pump(lambda p: b"built-in shell" in p.data, timeout=60)
            time.sleep(1.0)
            hvc_ws.send(b"\x1b[1;1R\r")
            _prompt_echo(hvc, uuid.uuid4().hex[:12])

        tdir = transcript_dir(host, guest.pk, "ttyS0")
        boots = transcript.boots(tdir)
        assert len(boots) == 1 and boots[0].ended is None
        dom_key = boots[0].key
        assert dom_key.count(":") == 2  # domain id : uuid : QEMU pid

        # The relay restarts while the guest runs: output meanwhile comes
        # from virtlogd's log, nothing lost, nothing twice, the same boot.
        with _ws(port, guest, operator, query=f"?from={op_offset}") as op_ws:
            op_page = Page(op_ws)
            op_page.pump(lambda p: "hello" in p.kinds(), timeout=10)
            later = uuid.uuid4().hex[:12]
            op_ws.send(f"sleep 4; echo {later}-$((6*7))\r".encode())
            op_page.pump(lambda p: b"sleep 4" in p.data, timeout=30)
        procs[1].stop()  # the relay goes away before the guest prints
        _source_closes_cleanly(spec[0])
        time.sleep(5)
        assert f"{later}-42".encode() in libvirt_agent.serial_log(Guest.objects.get(pk=guest.pk)).read_bytes()
        procs[1] = manage(["consolerelay", "--host", host_name], log=relay_log)
        with _ws(port, guest, operator, query=f"?from={op_offset}") as op_ws:
            op_page = Page(op_ws)
            op_page.pump(lambda p: f"{later}-42".encode() in p.data, timeout=60)
            # And typing works again through the new relay's stream.
            _prompt_echo(op_page, uuid.uuid4().hex[:12])
        whole = transcript.read_range(tdir, 0)
        assert whole.count(f"\n{token}-42".encode()) == 1 and whole.count(f"\n{later}-42".encode()) == 1
        assert b"viewer-25" not in whole
        boots = transcript.boots(tdir)
        assert len(boots) == 1 and boots[0].key == dom_key  # resumed, not a new boot
        with _ws(port, guest, operator, query="?from=0") as ws:
            everything = Page(ws).pump(lambda p: len(p.data) >= len(whole), timeout=30)
            assert bytes(everything.data[:len(whole)]) == whole

        # virtlogd rotates a log at 2 MiB (hvc0.log -> hvc0.log.0): 2.6 MB on
        # hvc0 while the relay is down; the new relay finds its file among the
        # backups by inode and reads on into the new one: every line once, in order.
        with _ws(port, guest, operator, console="hvc0") as hvc_ws:
            hvc = Page(hvc_ws).pump(lambda p: "hello" in p.kinds(), timeout=10)
            hvc_ws.send(b"sleep 3; i=0; while [ $i -lt 30000 ]; do echo rot-$i-" + b"x" * 70
                        + b"; i=$((i+1)); done; echo rot-done-$((6*7))\r")
            hvc.pump(lambda p: b"rot-done" in p.data, timeout=30)  # the typed line's echo
        procs[1].stop()
        hvc_log = libvirt_agent.console_log(Guest.objects.get(pk=guest.pk))
        wait_for(lambda: b"rot-done-42" in hvc_log.read_bytes(), 300, 0.5, "the 2.6 MB on hvc0")
        assert hvc_log.with_name("hvc0.log.0").exists(), "virtlogd did not rotate"
        procs[1] = manage(["consolerelay", "--host", host_name], log=relay_log)
        hvc_dir = transcript_dir(host, guest.pk, "hvc0")
        wait_for(lambda: b"rot-done-42" in transcript.read_range(hvc_dir, 0), 60, 0.5, "hvc0's transcript")
        numbers = [int(n) for n in re.findall(rb"rot-([0-9]+)-x", transcript.read_range(hvc_dir, 0))]
        assert numbers == list(range(30000))

        # The domain stops: the boot ends; started again: a second boot.
        gs.guest_force_off(guest=Guest.objects.get(pk=guest.pk), user=op)
        wait_state(guest, "stopped", 60)
        wait_for(lambda: transcript.boots(tdir)[-1].ended is not None, 20, what="the boot ended")
        info = json.loads((tdir / "boots.json").read_text())
        assert info[0]["end"] == len(transcript.read_range(tdir, 0))
    finally:
        for proc in procs:
            proc.stop()
        if guest is not None:
            name = libvirt_agent.domain_name(guest)
            subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)
        cleanup(libvirt_agent.IMAGE_ROOT / host_name)
        cleanup(base)
