"""libvirt guests end to end: service -> host agent -> libvirt (qemu:///system, TCG).

A libvirt build of the stand-in (a disk image that boots from its own disk)
runs as a domain through the same services, agent, states and pages as a
QEMU guest: start (running from libvirt's STARTED event), a file written in
the guest survives a reboot, ``virsh destroy`` behind kdevweb's back shows
``crashed`` with libvirt's reason within 2 s, kill -9 of the agent leaves the
domain running and a new agent re-reads its state, ACPI shutdown, rollback
to another build (a new overlay, the old one kept), delete (domain and
overlays gone), and the guest page shows the URI and the domain XML.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tty
import uuid
from pathlib import Path

import pytest

from guests import guest_services as gs
from guests import libvirt_agent
from guests.flake import render_files, write_files
from guests.runtime import libvirt as lv
from guests.vm_models import Guest, GuestEvent, Host
from tests.guest_helpers import KERNELS, cleanup, fake_build, make_host, short_dir
from tests.helpers import sample_settings, skip_or_fail
from tests.libvirt_helpers import URI, ensure_libvirtd, libvirtd_pid
from tests.procs import manage, wait_for
from tests.test_standin_image import NIX

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


STORAGE = {"/mnt/scratch": {"device": "/dev/disk/by-id/virtio-scratch0", "fsType": "ext4", "options": [],
                            "mkfsArgs": [], "autoFormat": False}}


def lv_settings(host_name: str, **extra) -> dict:
    return sample_settings(backend="libvirt", hostName=host_name, diskSizeMiB=96, profiles=[], testSuites=[],
                           **extra)


def build_image(directory: Path, settings: dict) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    write_files(render_files(settings, extra_module="", title="libvirt guest test"), str(directory))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(directory),
           "NIX_CONFIG": "substituters =\nexperimental-features = nix-command flakes\n"}
    proc = subprocess.run([NIX or "nix", "build", f"path:{directory}#image", "--no-link", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)[0]["outputs"]["out"]


def wait_state(guest: Guest, wanted: str, timeout: float) -> Guest:
    def check():
        row = Guest.objects.filter(pk=guest.pk).first()
        assert row is not None, "guest row vanished"
        if row.state in ("failed", "crashed") and wanted not in ("failed", "crashed"):
            events = list(GuestEvent.objects.filter(guest=row).values_list("kind", "text"))
            raise AssertionError(f"guest {row.state}: {row.error or row.exit_text}; events {events}")
        return row if row.state == wanted else None
    return wait_for(check, timeout, 0.05, f"state {wanted}")


def wait_exit_text(guest: Guest, text: str, timeout: float) -> Guest:
    # The agent stores libvirt's reason just after the state itself.
    def check():
        row = Guest.objects.get(pk=guest.pk)
        return row if text in row.exit_text else None
    return wait_for(check, timeout, 0.05, f"{text!r} in the last exit")


def wait_log(path: Path, pattern: str, timeout: float, start: int = 0) -> int:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            text = ""
        match = regex.search(text, start)
        if match:
            return match.end()
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in {path}:\n{text[-2000:]}")


def type_line(guest: Guest, line: str) -> None:
    conn = lv.connect(URI)
    try:
        dom = conn.lookupByName(libvirt_agent.domain_name(guest))
        pty = lv.serial_pty(dom)
    finally:
        conn.close()
    assert pty
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        time.sleep(1.5)  # QEMU polls for a pty client about once a second
        os.write(fd, b"\x1b[1;1R" + line.encode() + b"\r")  # answers ash's cursor query first
        time.sleep(0.5)
    finally:
        os.close(fd)


def domain_exists(name: str) -> bool:
    return subprocess.run(["virsh", "-c", URI, "domstate", name], capture_output=True).returncode == 0


def agent(name: str, tmp_path: Path):
    return manage(["hostagent", "--host", name, "--no-probe", "--stop-timeout", "20"],
                  log=tmp_path / f"agent-{name}-{time.monotonic_ns()}.log")


def need_libvirt_guests() -> None:
    """Skip (fail under KDEVWEB_TEST_STRICT) without root, nix, a kernel or libvirtd."""
    if os.geteuid() != 0 or not NIX or not KERNELS:
        skip_or_fail("needs root, nix and a Debian kernel")
    why = ensure_libvirtd()
    if why:
        skip_or_fail(why)


def test_libvirt_guest_through_the_whole_path(tmp_path, users, lab, redis_control, client_for):
    need_libvirt_guests()
    from guests import services

    base = short_dir("klv-")
    agents = []
    guest = None
    host_name = f"lvh{uuid.uuid4().hex[:4]}"
    try:
        host = make_host(host_name, base)
        Host.objects.filter(pk=host.pk).update(libvirt_uri=URI)
        host.refresh_from_db()
        op = users["operator"]
        config = services.configuration_create(lab=lab, name="lv-guest", user=op,
                                               settings=lv_settings("lv-one", storage=STORAGE))
        services.revision_create(configuration=config, settings=lv_settings("lv-two", storage=STORAGE), extra_module="",
                                 message="two", user=op)
        r2, r1 = list(config.revisions.all())[:2]
        b1 = fake_build(lab, r1, op, build_image(base / "b1", r1.settings))
        b2 = fake_build(lab, r2, op, build_image(base / "b2", r2.settings))
        kernel = host.kernels.get()
        # a host without a libvirt URI refuses a libvirt build, clearly
        plain = make_host(f"{host_name}x", base)
        with pytest.raises(Exception, match="no libvirt URI"):
            gs.guest_create(lab=lab, build=b2, name="nouri", host=plain, kernel=plain.kernels.get(), user=op)
        guest = gs.guest_create(lab=lab, build=b2, name="lvg", host=host, kernel=kernel, memory_mib=384, vcpus=1,
                                disk_sizes={"/mnt/scratch": 32}, user=op)
        agents.append(agent(host_name, tmp_path))
        wait_for(lambda: Host.objects.get(pk=host.pk).agent_seen, 60, what="the agent's heartbeat")

        # the Start button: a viewer is refused server-side, an operator starts it;
        # running comes from libvirt's STARTED event; it boots from its disk
        start_url = f"/labs/{lab.slug}/guests/{guest.pk}/start/"
        assert client_for(users["viewer"]).post(start_url).status_code == 403
        assert Guest.objects.get(pk=guest.pk).state == "defined"
        assert client_for(op).post(start_url).status_code == 302
        wait_state(guest, "running", 60)
        log = libvirt_agent.serial_log(Guest.objects.get(pk=guest.pk))
        pos = wait_log(log, r"SYSLINUX", 60)
        pos = wait_log(log, r"lv-two ready \(user", 120, pos)
        assert (libvirt_agent.guest_dir(host_name, guest.pk) / f"build-{b2.pk}.qcow2").is_file()

        # the page shows the URI and the domain XML, read-only
        page = client_for(users["viewer"]).get(f"/labs/{lab.slug}/guests/{guest.pk}/")
        assert page.status_code == 200
        html = page.content.decode()
        assert URI in html and "domain-xml" in html and "&lt;domain type=" in html
        assert "old one is kept until the guest is deleted" in html

        # the storage mount's disk, with the serial the configuration names
        type_line(guest, "echo serial-$(cat /sys/block/vdb/serial)-end")
        pos = wait_log(log, r"serial-scratch0-end", 30, pos)
        # a file written in the guest survives a reboot (kdevweb's Reboot)
        token = uuid.uuid4().hex
        type_line(guest, f"echo {token} > /root/persist; sync; echo wrote-$((40+2))")
        pos = wait_log(log, r"wrote-42", 30, pos)
        gs.guest_reboot(guest=Guest.objects.get(pk=guest.pk), user=op)
        wait_for(lambda: GuestEvent.objects.filter(guest=guest, kind="reset", source="agent").exists(), 20,
                 what="the agent's reset event")
        pos = wait_log(log, r"SYSLINUX", 60, pos)
        pos = wait_log(log, r"ready \(user", 120, pos)
        type_line(guest, "cat /root/persist")
        wait_log(log, token, 30, pos)
        assert Guest.objects.get(pk=guest.pk).state == "running"

        # virsh destroy behind kdevweb's back: crashed with libvirt's reason within 2 s
        subprocess.run(["virsh", "-c", URI, "destroy", libvirt_agent.domain_name(guest)], check=True,
                       capture_output=True)
        t0 = time.monotonic()  # the domain is gone when virsh returns (it waits for QEMU's exit)
        wait_state(guest, "crashed", 2.0)
        row = wait_exit_text(guest, "destroyed", 2.0)
        assert time.monotonic() - t0 < 2.0

        # kill -9 of the agent: the domain keeps running; a new agent re-reads it
        gs.guest_start(guest=row, user=op)
        wait_state(guest, "running", 60)
        os.kill(agents[0].pid, signal.SIGKILL)
        agents[0].popen.wait(10)
        time.sleep(1)
        assert domain_exists(libvirt_agent.domain_name(guest))
        state = subprocess.run(["virsh", "-c", URI, "domstate", libvirt_agent.domain_name(guest)],
                               capture_output=True, text=True).stdout
        assert "running" in state
        subprocess.run(["virsh", "-c", URI, "destroy", libvirt_agent.domain_name(guest)], check=True,
                       capture_output=True)  # while no agent runs
        agents[0] = agent(host_name, tmp_path)
        wait_state(guest, "crashed", 30)
        row = wait_exit_text(guest, "re-reading", 5.0)
        assert "destroyed" in row.exit_text

        # libvirtd restarts while the guest runs: it keeps running, the agent
        # reconnects; then an ACPI shutdown -> stopped, seen through libvirt's events
        gs.guest_start(guest=row, user=op)
        wait_state(guest, "running", 60)
        wait_log(log, r"ready \(user", 120)
        pid = libvirtd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: libvirtd_pid() is None, 10, what="libvirtd gone")
            assert ensure_libvirtd() is None
            time.sleep(4)  # keepalive (1 s x 2) notices, the watcher reconnects
        assert Guest.objects.get(pk=guest.pk).state == "running"
        gs.guest_stop(guest=Guest.objects.get(pk=guest.pk), user=op)
        wait_state(guest, "stopped", 60)
        assert GuestEvent.objects.filter(guest=guest, text__contains="the guest powered off").exists()

        # rollback to build 1: a new overlay, the old one kept
        gs.guest_rollback(guest=Guest.objects.get(pk=guest.pk), build=b1, user=op)
        gs.guest_start(guest=Guest.objects.get(pk=guest.pk), user=op)
        wait_state(guest, "running", 60)
        wait_log(log, r"lv-one ready \(user", 120)
        d = libvirt_agent.guest_dir(host_name, guest.pk)
        assert {p.name for p in d.glob("build-*.qcow2")} == {f"build-{b1.pk}.qcow2", f"build-{b2.pk}.qcow2"}
        assert (d / "disk-scratch0.qcow2").is_file()  # the extra disk stays across the rollback

        # delete with its disks: domain undefined, overlays and disk gone, row gone
        gs.guest_delete(guest=Guest.objects.get(pk=guest.pk), user=op, delete_disks=True)
        wait_for(lambda: not Guest.objects.filter(pk=guest.pk).exists(), 30, what="the guest row deleted")
        assert not domain_exists(libvirt_agent.domain_name(guest))
        assert not d.exists()
        guest = None
    finally:
        for proc in agents:
            proc.stop()
        if guest is not None:
            name = libvirt_agent.domain_name(guest)
            subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)
        cleanup(libvirt_agent.IMAGE_ROOT / host_name)
        cleanup(base)


@pytest.mark.django_db(transaction=True)
def test_libvirt_errors_end_as_clear_failures(users, lab, client_for):
    """libvirtd unreachable, or the image collected after the Start press:
    the start fails with the reason on the page; nothing stays `starting`."""
    if not KERNELS:
        pytest.skip("needs a Debian kernel")
    from guests import services
    from guests.hostagent import HostAgent

    base = short_dir("klv-")
    try:
        host = make_host("lvdown", base)
        Host.objects.filter(pk=host.pk).update(libvirt_uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock")
        host.refresh_from_db()
        op = users["operator"]
        config = services.configuration_create(lab=lab, name="lv-err", user=op, settings=lv_settings("lv-err"))
        outs = []
        for name in ("a", "b"):
            out = base / f"out-{name}"
            out.mkdir()
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out / "nixos.qcow2"), "64M"], check=True)
            outs.append(out)
        make = dict(lab=lab, host=host, kernel=host.kernels.get(), user=op, memory_mib=256, vcpus=1)
        down = gs.guest_create(name="down", build=fake_build(lab, config.latest, op, str(outs[0])), **make)
        gone = gs.guest_create(name="gone", build=fake_build(lab, config.latest, op, str(outs[1])), **make)
        gs.guest_start(guest=down, user=op)
        gs.guest_start(guest=gone, user=op)
        (outs[1] / "nixos.qcow2").unlink()  # collected after the Start press
        agent = HostAgent("lvdown", probe=False, store=base)
        agent.libvirt.start()  # libvirtd unreachable: noted, retried at each scan
        assert "cannot reach libvirt" in agent.libvirt.error
        for guest in (down, gone):
            agent._act(guest.pk, Guest.objects.get(pk=guest.pk).request_id)
        agent.wait_starts()
        down, gone = Guest.objects.get(pk=down.pk), Guest.objects.get(pk=gone.pk)
        assert down.state == "failed" and "cannot reach libvirt" in down.error, down.error
        assert gone.state == "failed" and "garbage-collected" in gone.error, gone.error
        page = client_for(users["viewer"]).get(f"/labs/{lab.slug}/guests/{down.pk}/")
        assert page.status_code == 200 and "cannot reach libvirt" in page.content.decode()
        # and the service refuses a start while the image is gone
        with pytest.raises(Exception, match="disk image is gone"):
            gs.guest_start(guest=gone, user=op)
    finally:
        cleanup(libvirt_agent.IMAGE_ROOT / "lvdown")
        cleanup(base)
