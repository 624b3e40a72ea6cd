"""guests.runtime.libvirt(_events) against a real libvirtd (qemu:///system, TCG).

The stand-in's libvirt image (built by nix) boots from its disk through a
per-guest overlay; events drive the state machine; ``virsh destroy`` is
noticed within 2 s; someone else's domain is left alone; a libvirtd
restart is survived (the guest keeps running, the watcher reconnects).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import tty
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from guests.runtime import libvirt as lv
from guests.runtime.libvirt_events import LibvirtWatcher, lifecycle_events
from guests.runtime.state import Event, State, transition
from tests.helpers import skip_or_fail
from tests.libvirt_helpers import URI, ensure_libvirtd, libvirtd_pid
from tests.test_standin_image import NIX, build_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def libvirtd() -> str:
    why = ensure_libvirtd()
    if why:
        skip_or_fail(why)
    return URI


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if NIX is None:
        skip_or_fail("nix is needed")
    return build_image(tmp_path_factory.mktemp("lvimg"), 96) / "nixos.qcow2"


@pytest.fixture()
def workdir() -> Iterator[Path]:
    # libvirt's QEMU user must reach the overlay: a 0711 directory chain.
    d = Path("/tmp") / f"kdevweb-lvtest-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o711)
    os.chmod(d, 0o711)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


class Recorder:
    """Collects watcher callbacks; runs them through the state machine."""

    def __init__(self) -> None:
        self.items: list[tuple[str, list[Event], str]] = []
        self.cond = threading.Condition()
        self.state = State.STARTING
        self.expected = False

    def __call__(self, name: str, events: list[Event], reason: str) -> None:
        with self.cond:
            for event in events:
                out = transition(self.state, event, stopping_expected=self.expected)
                self.state, self.expected = out.state, out.stopping_expected
            self.items.append((name, events, reason))
            self.cond.notify_all()

    def wait_for(self, name: str, pred, timeout: float) -> tuple[str, list[Event], str]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.items:
                    if item[0] == name and pred(item):
                        self.items.remove(item)
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching event for {name}; seen {self.items}")
                self.cond.wait(left)


def wait_log(path: Path, pattern: str, timeout: float, start: int = 0) -> int:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_bytes().decode("utf-8", "replace") if path.exists() else ""
        match = regex.search(text, start)
        if match:
            return match.end()
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in {path}:\n{text[-3000:]}")


def make_guest(conn, image: Path, workdir: Path, *, guest_id: str | None = None):  # type: ignore[no-untyped-def]
    gid = guest_id or uuid.uuid4().hex[:8]
    overlay = workdir / f"{gid}.qcow2"
    lv.create_overlay(image, overlay)
    spec = lv.DomainSpec(name=f"kdevweb-test-{gid}", guest_id=gid, memory_mib=384, vcpus=1, overlay=overlay,
                         image=image, network=lv.pick_network(conn), serial_log=workdir / f"{gid}.serial.log")
    return spec, lv.define(conn, spec)


def cleanup(conn, spec) -> None:  # type: ignore[no-untyped-def]
    try:
        dom = lv.lookup(conn, spec.name, spec.guest_id)
        if dom is not None:
            lv.undefine(dom, overlays=[spec.overlay])
    except lv.LibvirtGuestError:
        pass


def type_on_serial(dom, line: str) -> None:  # type: ignore[no-untyped-def]
    pty = lv.serial_pty(dom)
    assert pty and pty.startswith("/dev/pts/")
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
    try:
        # Raw, as virsh console does: a cooked pty would echo the guest's
        # output back into the guest. ash asked for the cursor position
        # (ESC[6n) and waits for the answer before reading a line.
        tty.setraw(fd)
        # QEMU notices an opened pty by polling (about once a second) and
        # reads nothing before.
        time.sleep(1.5)
        os.write(fd, b"\x1b[1;1R" + line.encode() + b"\r")
        time.sleep(0.5)
    finally:
        os.close(fd)


def test_domain_xml_is_what_the_guest_asked_for(tmp_path: Path) -> None:
    spec = lv.DomainSpec(name="kdevweb-g1", guest_id="g1", memory_mib=512, vcpus=2, overlay=tmp_path / "o.qcow2",
                         image=Path("/nix/store/x-image/nixos.qcow2"), domain_type=lv.domain_type_for("tcg"))
    xml = lv.domain_xml(spec)
    assert "<domain type='qemu'>" in xml.replace('"', "'")
    assert "<memory unit='MiB'>512</memory>" in xml and "<vcpu>2</vcpu>" in xml
    assert "<interface type='user'>" in xml and "<serial type='pty'>" in xml
    assert "relabel='no'" in xml and lv.MARKER_NS in xml
    assert lv.domain_type_for("kvm") == "kvm"
    disks = lv.domain_xml(lv.DomainSpec(**{**spec.__dict__, "disks": ((tmp_path / "d.qcow2", "scratch0"),)}))
    assert "<target dev='vdb' bus='virtio'/><serial>scratch0</serial>" in disks
    with pytest.raises(lv.LibvirtGuestError, match="serial"):
        lv.domain_xml(lv.DomainSpec(**{**spec.__dict__, "disks": ((tmp_path / "d.qcow2", "a<b"),)}))
    net = lv.domain_xml(lv.DomainSpec(**{**spec.__dict__, "network": "default"}))
    assert "<source network=\"default\"/>" in net
    with pytest.raises(lv.LibvirtGuestError, match="Nix store"):
        lv.domain_xml(lv.DomainSpec(**{**spec.__dict__, "overlay": Path("/nix/store/x/o.qcow2")}))
    with pytest.raises(lv.LibvirtGuestError, match="domain name"):
        lv.domain_xml(lv.DomainSpec(**{**spec.__dict__, "name": "a b<"}))


def test_lifecycle_mapping() -> None:
    import libvirt
    events, why = lifecycle_events(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
    assert transition(State.RUNNING, events[0]).state is State.CRASHED and "destroyed" in why
    assert transition(State.STOPPING, events[0], stopping_expected=True).state is State.STOPPED
    events, _ = lifecycle_events(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)
    state = State.RUNNING
    expected = False
    for e in events:
        out = transition(state, e, stopping_expected=expected)
        state, expected = out.state, out.stopping_expected
    assert state is State.STOPPED


def test_missing_image_and_dead_uri_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(lv.LibvirtGuestError, match="missing"):
        lv.create_overlay(tmp_path / "gone.qcow2", tmp_path / "o.qcow2")
    with pytest.raises(lv.LibvirtGuestError, match="cannot reach libvirt"):
        lv.connect("qemu+unix:///system?socket=/nonexistent/sock")


def test_boot_from_disk_file_survives_reboot_and_acpi_shutdown(libvirtd: str, image: Path, workdir: Path) -> None:
    rec = Recorder()
    watcher = LibvirtWatcher(libvirtd, rec)
    watcher.start()
    spec, dom = make_guest(watcher.conn, image, workdir)
    try:
        lv.start(dom)
        rec.wait_for(spec.name, lambda i: i[1][:1] == [Event("started")], 10)
        assert rec.state is State.RUNNING
        log = spec.serial_log
        assert log is not None
        pos = wait_log(log, r"SYSLINUX", 60)
        pos = wait_log(log, r"ready \(user", 90, pos)
        token = uuid.uuid4().hex
        time.sleep(1)
        type_on_serial(dom, f"echo {token} > /root/persist; sync; echo wrote-$((40+2))")
        pos = wait_log(log, r"wrote-42", 20, pos)
        lv.reboot(dom)
        rec.wait_for(spec.name, lambda i: Event("reset") in i[1], 30)
        pos = wait_log(log, r"SYSLINUX", 60, pos)
        pos = wait_log(log, r"ready \(user", 90, pos)
        time.sleep(1)
        type_on_serial(dom, "cat /root/persist")
        wait_log(log, token, 20, pos)
        assert rec.state is State.RUNNING
        lv.shutdown(dom)  # ACPI power button -> the guest powers off
        rec.wait_for(spec.name, lambda i: any(e.kind == "exited" for e in i[1]), 60)
        assert rec.state is State.STOPPED
        assert lv.current_state(dom)[0] is State.STOPPED
        # nothing was written into the store image
        assert os.stat(image).st_uid == 0 and not os.listxattr(image)
    finally:
        cleanup(watcher.conn, spec)
        watcher.stop()
    assert not spec.overlay.exists()


def test_virsh_destroy_noticed_and_foreign_domains_left_alone(libvirtd: str, image: Path, workdir: Path) -> None:
    rec = Recorder()
    watcher = LibvirtWatcher(libvirtd, rec)
    watcher.start()
    spec, dom = make_guest(watcher.conn, image, workdir)
    foreign = f"kdevweb-test-foreign-{uuid.uuid4().hex[:6]}"
    xml = f"<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>32</memory><os><type>hvm</type></os></domain>"
    (workdir / "foreign.xml").write_text(xml)
    subprocess.run(["virsh", "-c", libvirtd, "define", str(workdir / "foreign.xml")], check=True, capture_output=True)
    try:
        lv.start(dom)
        rec.wait_for(spec.name, lambda i: i[1][:1] == [Event("started")], 10)
        subprocess.run(["virsh", "-c", libvirtd, "destroy", spec.name], check=True, capture_output=True)
        # Timed from virsh's return (it waits for QEMU's exit): the 2 s is how
        # long kdevweb takes to notice, not how long virsh takes to start up
        # and kill QEMU on a loaded machine (2.05 s once in CI).
        t0 = time.monotonic()
        _, events, reason = rec.wait_for(spec.name, lambda i: any(e.kind == "exited" for e in i[1]), 2.0)
        assert time.monotonic() - t0 < 2.0
        assert rec.state is State.CRASHED and "destroyed" in reason
        assert lv.current_state(dom) == (State.CRASHED, "shut off: destroyed (forced off)")
        # someone else's domain: refused by name, never touched
        with pytest.raises(lv.NotOurs, match="did not create"):
            lv.define(watcher.conn, lv.DomainSpec(**{**spec.__dict__, "name": foreign}))
        with pytest.raises(lv.NameClash, match="another kdevweb guest"):
            lv.define(watcher.conn, lv.DomainSpec(**{**spec.__dict__, "guest_id": "someone-else"}))
        subprocess.run(["virsh", "-c", libvirtd, "start", foreign], capture_output=True)
        subprocess.run(["virsh", "-c", libvirtd, "destroy", foreign], capture_output=True)
        time.sleep(0.5)
        assert all(item[0] != foreign for item in rec.items)
    finally:
        subprocess.run(["virsh", "-c", libvirtd, "undefine", foreign], capture_output=True)
        cleanup(watcher.conn, spec)
        watcher.stop()


def test_libvirtd_restart_guest_keeps_running_and_watcher_reconnects(libvirtd: str, image: Path,
                                                                     workdir: Path) -> None:
    pid = libvirtd_pid()
    if pid is None:
        pytest.skip("no single libvirtd process to restart")
    rec = Recorder()
    reconnected = threading.Event()
    watcher = LibvirtWatcher(libvirtd, rec, on_reconnect=reconnected.set)
    watcher.start()
    spec, dom = make_guest(watcher.conn, image, workdir)
    try:
        lv.start(dom)
        rec.wait_for(spec.name, lambda i: i[1][:1] == [Event("started")], 10)
        qemu_pid = int(Path(f"/run/libvirt/qemu/{spec.name}.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if libvirtd_pid() is None:
                break
            time.sleep(0.1)
        assert ensure_libvirtd() is None
        assert reconnected.wait(15), "the watcher did not reconnect"
        os.kill(qemu_pid, 0)  # QEMU survived libvirtd's restart
        dom2 = lv.lookup(watcher.conn, spec.name, spec.guest_id)
        assert dom2 is not None and lv.current_state(dom2)[0] is State.RUNNING
        subprocess.run(["virsh", "-c", libvirtd, "destroy", spec.name], check=True, capture_output=True)
        rec.wait_for(spec.name, lambda i: any(e.kind == "exited" for e in i[1]), 2.0)
    finally:
        cleanup(watcher.conn, spec)
        watcher.stop()
