"""Guests end to end with real QEMU (TCG): service -> host agent -> QEMU.

Boots are slow under load (10-40 s each), so one test walks a guest's
whole life with two boots: start (virtiofs store, modules and a share; a
disk written), ACPI shutdown, roll back to the earlier build, start again
(the disk kept its data), kill -9 of the agent (the guest keeps running,
a new agent re-adopts it), kill -9 of QEMU (crashed within 2 s, virtiofsd
gone), delete (nothing left, disks too when asked). A second agent on the
same machine handles a second host's guest meanwhile; the NIC fetches a
token from the host's loopback.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from guests import guest_services as gs
from guests.runtime.virtiofsd import VIRTIOFSD
from guests.vm_models import Guest, GuestEvent
from tests.guest_helpers import (KERNELS, cleanup, config_with_revisions, fake_build, fake_out_path, make_host,
                                 short_dir)
from tests.procs import manage, start_daphne, wait_for
from tests.test_standin_boot import NIX, Console, build_guest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

needs_host = pytest.mark.skipif(
    not KERNELS or not NIX or not os.access(VIRTIOFSD, os.X_OK) or os.geteuid() != 0,
    reason="needs a Debian kernel, nix, /usr/lib/qemu/virtiofsd and root",
)


def state(guest: Guest) -> str:
    return Guest.objects.get(pk=guest.pk).state


def wait_state(guest: Guest, wanted: str, timeout: float) -> Guest:
    def check():
        row = Guest.objects.filter(pk=guest.pk).first()
        assert row is not None, "guest row vanished"
        if row.state in ("failed", "crashed") and wanted not in ("failed", "crashed"):
            raise AssertionError(f"guest {row.state}: {row.error or row.exit_text}\n{row.stderr_tail}\n"
                                 f"{row.serial_tail}")
        return row if row.state == wanted else None
    return wait_for(check, timeout, 0.05, f"state {wanted}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pids_of(run: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in run.glob("*.pid")]


def agent(name: str, tmp_path: Path):
    return manage(["hostagent", "--host", name, "--no-probe", "--stop-timeout", "30"],
                  log=tmp_path / f"agent-{name}-{time.monotonic_ns()}.log")


@needs_host
def test_guest_life(tmp_path, users, lab, redis_control):
    base = short_dir()
    shares = base / "shares"
    (shares / "src").mkdir(parents=True)
    (shares / "src" / "token").write_text("share-token-51c9\n")
    agents = []
    web_root = base / "www"
    web_root.mkdir()
    (web_root / "token").write_text("nic-token-3e1d\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    http_port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        host = make_host("h1", base, roots=[str(shares)])
        other = make_host("h2", base, roots=[str(shares)])
        config = config_with_revisions(lab, users["operator"], ["g-one", "g-two"])
        r2, r1 = list(config.revisions.all())[:2]
        b1 = fake_build(lab, r1, users["operator"], str(build_guest(base / "b1", r1.settings)))
        b2 = fake_build(lab, r2, users["operator"], str(build_guest(base / "b2", r2.settings)))
        kernel = host.kernels.get()
        guest = gs.guest_create(lab=lab, build=b2, name="g", host=host, kernel=kernel, memory_mib=512, vcpus=1,
                                disk_sizes={"/mnt/scratch": 64}, share_paths={"src": (str(shares / "src"), True)},
                                user=users["operator"])
        # Second agent, second host: a guest whose "kernel" is not one fails there, clearly.
        bogus = base / "not-a-kernel"
        bogus.write_bytes(b"\0" * 4096)
        bad_kernel = other.kernels.get()
        bad = gs.guest_create(lab=lab, build=b1, name="bad", host=other, kernel=bad_kernel, memory_mib=256,
                              vcpus=1, share_paths={"src": (str(shares / "src"), True)}, user=users["operator"])
        type(bad_kernel).objects.filter(pk=bad_kernel.pk).update(image=str(bogus))

        agents.append(agent("h1", tmp_path))
        agents.append(agent("h2", tmp_path))
        # A second agent for the same host refuses to run (it would fight over QMP).
        wait_for(lambda: type(host).objects.get(pk=host.pk).agent_seen, 60, what="the first agent's heartbeat")
        twin = agent("h1", tmp_path)
        agents.append(twin)  # stopped at the end should it run after all
        assert twin.popen.wait(60) != 0 and "another host agent for h1" in twin.output()
        requested = time.monotonic()
        gs.guest_start(guest=guest, user=users["operator"])
        with pytest.raises(ValidationError, match="already starting"):
            gs.guest_start(guest=guest, user=users["admin"])  # double click: one QEMU
        gs.guest_start(guest=bad, user=users["operator"])
        bad = wait_state(bad, "failed", 30)
        assert "QEMU" in bad.error or "kernel" in bad.error.lower(), bad.error
        run = host.guest_run_dir(guest.pk)
        row = wait_state(guest, "running", 60)
        assert row.ssh_port and row.qemu_pid and row.accel == "tcg"
        # QEMU's parent is the agent, and it leads a session of its own: no
        # group or session kill aimed at anything else reaches it.
        stat = Path(f"/proc/{row.qemu_pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == agents[0].pid and int(stat[3]) == row.qemu_pid
        print(f"\nstart request -> running: {time.monotonic() - requested:.2f} s")

        # Boot 1 (build #2): banner, the share, the disk by its serial.
        console = Console(run / "serial.sock")
        console.expect(r"kdevweb-standin: g-two ready", timeout=120)
        console.expect(r"\]# ", timeout=10)
        # The stand-in's initrd does not load virtio_blk (helper A's area): load it from the modules share.
        console.send("cat /mnt/src/token; modprobe virtio_blk; sleep 1; cat /sys/block/vda/serial; echo")
        console.expect(r"share-token-51c9", timeout=20)
        console.expect(r"scratch0", timeout=10)
        console.send("echo disk-token-77ab | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; echo wrote-$?")
        console.expect(r"wrote-0", timeout=20)
        console.send("echo mounts-$(grep -c ' virtiofs ' /proc/mounts)")
        console.expect(r"mounts-3", timeout=20)  # store, modules, src
        console.close()
        gs.guest_stop(guest=guest, user=users["operator"])
        row = wait_state(guest, "stopped", 60)
        assert row.exit_status == 0 and not pids_of(run)

        # Roll back to build #1 and boot it: the disk kept its data.
        with pytest.raises(ValidationError, match="already runs"):
            gs.guest_rollback(guest=row, build=b2, user=users["operator"])
        gs.guest_rollback(guest=row, build=b1, user=users["operator"])
        gs.guest_start(guest=row, user=users["operator"])
        wait_state(guest, "running", 60)
        console = Console(run / "serial.sock")
        console.expect(r"kdevweb-standin: g-one ready", timeout=120)
        console.expect(r"\]# ", timeout=10)
        console.send("modprobe virtio_blk; sleep 1; head -c 15 /dev/vda; echo")
        console.expect(r"disk-token-77ab", timeout=20)
        # The user-mode NIC reaches the host's loopback as 10.0.2.2. The
        # stand-in brings no NIC up yet (no udhcpc: helper A's area), so the
        # test configures slirp's fixed addresses by hand.
        console.send("modprobe virtio_net; sleep 1; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; "
                     f"wget -q -O - http://10.0.2.2:{http_port}/token")
        console.expect(r"nic-token-3e1d", timeout=30)
        console.close()
        # The SSH port forward listens on the host's loopback.
        with socket.create_connection(("127.0.0.1", Guest.objects.get(pk=guest.pk).ssh_port), timeout=5):
            pass

        # kill -9 of daphne and of an RQ worker (with its work horses): the
        # guest does not depend on either.
        qemu_pid = Guest.objects.get(pk=guest.pk).qemu_pid
        web, port = start_daphne(tmp_path / "daphne.log")
        worker = manage(["buildworker"], log=tmp_path / "worker.log")
        time.sleep(2)
        web.kill9()
        worker.kill9()
        assert alive(qemu_pid) and state(guest) == "running"

        # kill -9 of the agent: the guest keeps running; a new agent adopts it.
        os.kill(agents[0].pid, signal.SIGKILL)  # the agent alone (Proc.kill9 would take its children too)
        agents[0].popen.wait(10)
        time.sleep(1)
        assert alive(qemu_pid) and state(guest) == "running"
        agents[0] = agent("h1", tmp_path)
        wait_for(lambda: GuestEvent.objects.filter(guest=guest, kind="adopt", text__contains="re-adopted").exists(),
                 30, what="re-adoption")
        assert state(guest) == "running" and alive(qemu_pid)
        assert Guest.objects.get(pk=guest.pk).qemu_pid == qemu_pid

        # Redis restarts while the guest runs: state still right, and a
        # request whose wake-up message was lost is found by the agent's scan.
        redis_control.restart()
        time.sleep(1)
        assert state(guest) == "running" and alive(qemu_pid)
        gs.guest_reboot(guest=guest, user=users["operator"])
        wait_for(lambda: GuestEvent.objects.filter(guest=guest, kind="reset", source="agent").exists(), 15,
                 what="the agent's reset event")
        assert state(guest) == "running" and alive(qemu_pid)

        # kill -9 of QEMU: crashed within 2 s, its virtiofsd gone.
        daemons = [pid for pid in pids_of(run) if pid != qemu_pid]
        assert len(daemons) == 3
        os.kill(qemu_pid, signal.SIGKILL)
        killed = time.monotonic()
        row = wait_state(guest, "crashed", 5)
        assert time.monotonic() - killed < 2.0
        assert "SIGKILL" in row.exit_text or "ended" in row.exit_text
        assert "Linux version" in row.serial_tail or row.serial_tail
        wait_for(lambda: not any(alive(pid) for pid in daemons), 5, what="virtiofsd gone")

        # Delete with disks: nothing of the guest remains.
        disk_dir = host.guest_disk_dir(guest.pk)
        assert (disk_dir / "scratch0.qcow2").exists()
        gs.guest_delete(guest=row, user=users["operator"], delete_disks=True)
        wait_for(lambda: not Guest.objects.filter(pk=guest.pk).exists(), 15, what="row deleted")
        assert not run.exists() and not disk_dir.exists()
        left = [p for p in Path(host.run_dir).rglob("*") if (p.is_file() or p.is_socket()) and p.name != "agent.lock"]
        assert left == [], left
        assert all(not alive(pid) for pid in [qemu_pid, *daemons])
    finally:
        httpd.shutdown()
        for proc in agents:
            proc.stop()
        cleanup(base)  # and anything a failed test left running


@pytest.mark.django_db
def test_bad_inputs_are_refused_clearly(tmp_path, users, lab, config):
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    base = short_dir()
    try:
        roots = base / "roots"
        (roots / "ok").mkdir(parents=True)
        host = make_host("h", base, roots=[str(roots)], budget=1024)
        kernel = host.kernels.get()
        out = fake_out_path(base / "out")
        build = fake_build(lab, config.latest, users["operator"], out)
        make = dict(lab=lab, build=build, host=host, kernel=kernel, user=users["operator"])
        with pytest.raises(ValidationError, match="one line without control characters"):
            gs.guest_create(name="a", extra_cmdline="quiet\ninit=/bin/sh", **make)
        with pytest.raises(ValidationError, match="longer than the kernel's limit"):
            gs.guest_create(name="a", extra_cmdline="x" * 3000, **make)
        with pytest.raises(ValidationError, match="1–63 letters"):
            gs.guest_create(name="../x", **make)
        with pytest.raises(ValidationError, match="between 128 MiB"):
            gs.guest_create(name="a", memory_mib=4096, **make)
        failed = fake_build(lab, config.latest, users["operator"], out, status="failed")
        with pytest.raises(ValidationError, match="has not succeeded"):
            gs.guest_create(**{**make, "build": failed}, name="a")
        assert not Guest.objects.exists()

        g1 = gs.guest_create(name="g1", memory_mib=768, **make)
        g2 = gs.guest_create(name="g2", memory_mib=512, **make)
        gs.guest_start(guest=g1, user=users["operator"])
        with pytest.raises(ValidationError, match="memory budget"):
            gs.guest_start(guest=g2, user=users["operator"])
        assert state(g2) == "defined"
        # Garbage-collected build output: refused before anything starts.
        Guest.objects.filter(pk=g1.pk).update(state="stopped", pending_action="")
        (base / "out" / "initrd").unlink()
        with pytest.raises(ValidationError, match="gone .garbage-collected"):
            gs.guest_start(guest=g1, user=users["operator"])
        fake_out_path(base / "out")
        # Missing kernel.
        type(kernel).objects.filter(pk=kernel.pk).update(image=str(base / "vmlinuz-gone"))
        with pytest.raises(ValidationError, match="kernel image .* is gone"):
            gs.guest_start(guest=g1, user=users["operator"])
        assert state(g1) == "stopped"
    finally:
        cleanup(base)


@pytest.mark.django_db
def test_shares_must_be_under_the_host_roots(users, lab):
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    from guests import services
    from tests.helpers import sample_settings

    base = short_dir()
    try:
        roots = base / "roots"
        (roots / "ok").mkdir(parents=True)
        (base / "outside").mkdir()
        (roots / "escape").symlink_to(base / "outside")
        host = make_host("h", base, roots=[str(roots)])
        config = services.configuration_create(
            lab=lab, name="shared", user=users["operator"],
            settings=sample_settings(shares={"/mnt/src": {"tag": "src", "options": []}}))
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), user=users["operator"])
        for path, message in [(str(base / "outside"), "not under an allowed share root"),
                              (str(roots / "escape"), "not under an allowed share root"),
                              (str(roots / "ok" / ".." / ".." / "outside"), "not under an allowed share root"),
                              ("relative/path", "must be absolute"), ("", "needs a host directory")]:
            with pytest.raises(ValidationError, match=message):
                gs.guest_create(name="s", share_paths={"src": (path, False)}, **make)
        guest = gs.guest_create(name="s", share_paths={"src": (str(roots / "ok"), False)}, **make)
        assert guest.shares.get().host_path == str(roots / "ok")
        # Swapped for a symlink after creation: refused at start too.
        (roots / "ok").rmdir()
        (roots / "ok").symlink_to(base / "outside")
        with pytest.raises(ValidationError, match="not under an allowed share root"):
            gs.guest_start(guest=guest, user=users["operator"])
        assert state(guest) == "defined"
    finally:
        cleanup(base)


def test_request_messages_are_strict():
    from guests.hostrequests import Request, decode, encode

    good = Request(3, "start", "a" * 32)
    assert decode(encode(good)) == good
    for raw in ['{"guest": 3, "action": "rm -rf /", "request": "%s"}' % ("a" * 32),
                '{"guest": "3", "action": "start", "request": "%s"}' % ("a" * 32),
                '{"guest": 3, "action": "start", "request": "x"}',
                '{"guest": 3, "action": "start", "request": "%s", "path": "/"}' % ("a" * 32),
                "not json", b"\xff", "[]"]:
        assert decode(raw) is None, raw
    assert re.fullmatch(r"[0-9a-f]{32}", good.request)


@pytest.mark.django_db(transaction=True)  # the agent's start threads read the rows
def test_agent_records_failures_found_at_start(users, lab, config):
    """What changed between the service's checks and the agent's start
    (a garbage-collected initrd, a share swapped for a symlink) fails the
    start with the reason; nothing stays `starting`, nothing is started."""
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    from guests import services
    from guests.hostagent import HostAgent
    from tests.helpers import sample_settings

    base = short_dir()
    try:
        roots = base / "roots"
        (roots / "src").mkdir(parents=True)
        (base / "outside").mkdir()
        host = make_host("h", base, roots=[str(roots)])
        shared = services.configuration_create(
            lab=lab, name="shared", user=users["operator"],
            settings=sample_settings(shares={"/mnt/src": {"tag": "src", "options": []}}))
        out = base / "out"
        build = fake_build(lab, shared.latest, users["operator"], fake_out_path(out))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), user=users["operator"],
                    share_paths={"src": (str(roots / "src"), False)})
        gc = gs.guest_create(name="gc", **make)
        other = fake_build(lab, shared.latest, users["operator"], fake_out_path(base / "out2"))
        swapped = gs.guest_create(name="swapped", **{**make, "build": other})
        gs.guest_start(guest=gc, user=users["operator"])
        gs.guest_start(guest=swapped, user=users["operator"])
        (out / "initrd").unlink()  # collected after the Start press
        (roots / "src").rename(roots / "src-old")
        (roots / "src").symlink_to(base / "outside")
        agent = HostAgent("h", probe=False, store=base)
        for guest in (gc, swapped):
            agent._act(guest.pk, Guest.objects.get(pk=guest.pk).request_id)
        agent.wait_starts()
        gc, swapped = Guest.objects.get(pk=gc.pk), Guest.objects.get(pk=swapped.pk)
        assert gc.state == "failed" and "garbage-collected" in gc.error, gc.error
        assert swapped.state == "failed" and "not under an allowed share root" in swapped.error, swapped.error
        assert not gc.pending_action and not agent.managed
        assert not list(Path(host.run_dir).rglob("*.pid"))
        # Under the Host row's roots (which the web tier can write) but not
        # under the roots root gave the agent: refused too.
        fake_out_path(out)
        (roots / "src").unlink()
        (roots / "src-old").rename(roots / "src")
        gs.guest_start(guest=gc, user=users["operator"])
        narrow = HostAgent("h", probe=False, store=base, share_roots=[str(base / "outside")])
        narrow._act(gc.pk, Guest.objects.get(pk=gc.pk).request_id)
        narrow.wait_starts()
        gc = Guest.objects.get(pk=gc.pk)
        assert gc.state == "failed" and "not under an allowed share root" in gc.error, gc.error
        # A forged or stale request id does nothing.
        gs.guest_start(guest=gc, user=users["operator"])
        agent._act(gc.pk, "0" * 32)
        assert Guest.objects.get(pk=gc.pk).state == "starting"
    finally:
        cleanup(base)


@pytest.mark.django_db(transaction=True)
def test_agent_that_died_mid_start_is_not_a_stuck_start(users, lab, config):
    """A guest left `starting` by an agent that took the request and died
    before QEMU ran ends `failed` when the next agent starts; one whose
    request was not yet taken is started."""
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    from guests.hostagent import HostAgent

    base = short_dir()
    try:
        host = make_host("h", base)
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), user=users["operator"])
        taken, waiting = gs.guest_create(name="taken", **make), gs.guest_create(name="waiting", **make)
        for guest in (taken, waiting):
            gs.guest_start(guest=guest, user=users["operator"])
        Guest.objects.filter(pk=taken.pk).update(pending_action="")  # the dead agent had taken it
        agent = HostAgent("h", probe=False, store=base)
        agent._adopt_all()
        row = Guest.objects.get(pk=taken.pk)
        assert row.state == "failed" and "stopped while starting" in row.error
        assert Guest.objects.get(pk=waiting.pk).state == "starting"
        agent._scan()
        agent.wait_starts()
        assert Guest.objects.get(pk=waiting.pk).state == "running"  # QEMU is up (its fake initrd fails later)
        agent._force_off(agent.managed[waiting.pk])
        deadline = time.monotonic() + 20
        while waiting.pk in agent.managed and time.monotonic() < deadline:
            agent._watch()
            time.sleep(0.05)
        assert Guest.objects.get(pk=waiting.pk).state == "stopped"
        assert not list(Path(host.run_dir).rglob("*.pid"))
    finally:
        cleanup(base)


@pytest.mark.django_db(transaction=True)
def test_shutdown_ignored_is_forced_off_after_the_timeout(users, lab, config):
    """A guest that ignores the ACPI button (here: its kernel finds no init
    and halts) is forced off once --stop-timeout passes, and ends stopped."""
    if not KERNELS or os.geteuid() != 0 or not os.access(VIRTIOFSD, os.X_OK):
        pytest.skip("needs a Debian kernel, virtiofsd and root")
    from guests.hostagent import HostAgent

    base = short_dir()
    try:
        host = make_host("h", base)
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        guest = gs.guest_create(lab=lab, build=build, name="deaf", host=host, kernel=host.kernels.get(),
                                memory_mib=256, vcpus=1, user=users["operator"])
        agent = HostAgent("h", stop_timeout=1.0, probe=False, store=base)
        gs.guest_start(guest=guest, user=users["operator"])
        agent._scan()
        agent.wait_starts()
        assert state(guest) == "running"
        gs.guest_stop(guest=guest, user=users["operator"])
        asked = time.monotonic()
        agent._scan()
        while guest.pk in agent.managed and time.monotonic() - asked < 20:
            agent._scan()
            agent._watch()
            time.sleep(0.05)
        row = Guest.objects.get(pk=guest.pk)
        assert row.state == "stopped", (row.state, row.exit_text)
        assert 1.0 <= time.monotonic() - asked < 10
        kinds = list(GuestEvent.objects.filter(guest=guest).values_list("kind", flat=True))
        assert "force off" in kinds and "shutdown" in kinds
        # Delete without its disks: processes, sockets and run dir go, the disks stay.
        disk = host.guest_disk_dir(guest.pk) / "disk0.qcow2"
        disk.parent.mkdir(parents=True)
        disk.write_bytes(b"data")
        gs.guest_delete(guest=row, user=users["operator"])
        agent._scan()
        assert not Guest.objects.filter(pk=guest.pk).exists()
        assert not host.guest_run_dir(guest.pk).exists() and disk.read_bytes() == b"data"
    finally:
        cleanup(base)


@pytest.mark.django_db(transaction=True)
def test_agent_hands_qemu_only_store_paths_and_kernel_images(users, lab, config):
    """The rows are written by the unprivileged web tier; the root agent
    refuses a build output outside /nix/store and a "kernel" that is no
    kernel image, so a row cannot make QEMU read any host file."""
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    from guests.hostagent import HostAgent

    base = short_dir()
    try:
        host = make_host("h", base)
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        make = dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), user=users["operator"])
        outside, notkernel = gs.guest_create(name="outside", **make), gs.guest_create(name="notkernel", **make)
        (base / "shadow").write_text("root:secret\n")
        for guest, agent, expected in ((outside, HostAgent("h", probe=False), "is not in /nix/store"),
                                       (notkernel, HostAgent("h", probe=False, store=base),
                                        "not a Linux kernel image")):
            if guest is notkernel:
                type(make["kernel"]).objects.filter(pk=make["kernel"].pk).update(image=str(base / "shadow"))
            gs.guest_start(guest=guest, user=users["operator"])
            agent._act(guest.pk, Guest.objects.get(pk=guest.pk).request_id)
            agent.wait_starts()
            row = Guest.objects.get(pk=guest.pk)
            assert row.state == "failed" and expected in row.error, row.error
        assert not list(Path(host.run_dir).rglob("*.pid"))
    finally:
        cleanup(base)
