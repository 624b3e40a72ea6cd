"""The host agent's libvirt side: guests of libvirt builds, run as libvirt domains.

A guest whose build is a libvirt build (``backend = "libvirt"``: a disk
image, ``nixos.qcow2``) runs as a domain on its host's ``libvirt_uri``
through :mod:`guests.runtime.libvirt`. The host agent hands such guests'
requests here (``act``) and calls ``drain`` in its loop and ``scan`` with
its periodic scan; libvirt's domain events arrive on libvirt's event-loop
thread, are queued, and the agent's loop applies them with its own
``_apply`` (same state machine, same row locking, same timeline).

Per-guest files live under :data:`IMAGE_ROOT` (``/var/lib/libvirt/images``
is libvirt's own 0711 directory, which its QEMU user can traverse; the
agent's run dirs are 0700): one overlay per build the guest ran
(``build-<id>.qcow2``, backed by the store image), so a rollback starts a
new overlay and the old one stays until the guest is deleted; and the
serial log virtlogd writes. The domain XML kdevweb defined is kept in the
guest's timeline (kind ``domain xml``) for the page, which cannot ask
libvirt itself (the web tier is unprivileged).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.utils import timezone

from guests.agent_support import tail_lines
from guests.runtime import libvirt as lv
from guests.runtime.disks import DiskError, create_disk
from guests.runtime.libvirt_events import LibvirtWatcher
from guests.runtime.state import Event, State
from guests.vm_models import ACTIVE_STATES, Action, Guest, GuestEvent

if TYPE_CHECKING:
    from guests.hostagent import HostAgent

log = logging.getLogger("kdevweb.hostagent.libvirt")
IMAGE_ROOT = Path("/var/lib/libvirt/images/kdevweb")
XML_EVENT = "domain xml"


def is_libvirt(guest: Guest) -> bool:
    return (guest.build.revision.settings or {}).get("backend") == "libvirt"


def domain_name(guest: Guest) -> str:
    # The host's name too: two kdevweb databases on one libvirtd (tests) both have a guest 1.
    return f"kdevweb-{guest.pk}-{guest.host.name}-{guest.name}"[:64]


def marker_id(guest: Guest) -> str:
    return f"{guest.host.name}/{guest.pk}"


def guest_id_of(name: str) -> int | None:
    parts = name.split("-", 2)
    if len(parts) < 2 or parts[0] != "kdevweb" or not parts[1].isdigit():
        return None
    return int(parts[1])


def guest_dir(host_name: str, guest_id: int) -> Path:
    return IMAGE_ROOT / host_name / f"guest-{guest_id}"


def overlay_path(guest: Guest) -> Path:
    return guest_dir(guest.host.name, guest.pk) / f"build-{guest.build_id}.qcow2"


def disk_path(guest: Guest, serial: str) -> Path:
    """An extra disk (a storage mount) of a libvirt guest: beside its overlays."""
    return guest_dir(guest.host.name, guest.pk) / f"disk-{serial}.qcow2"


def serial_log(guest: Guest) -> Path:
    return guest_dir(guest.host.name, guest.pk) / "serial.log"


def console_log(guest: Guest) -> Path:
    """The virtio console's (hvc0) log, written by virtlogd like serial.log."""
    return guest_dir(guest.host.name, guest.pk) / "hvc0.log"


def domain_xml_of(guest: Guest) -> str:
    """The last domain XML kdevweb defined for the guest (for its page)."""
    event = GuestEvent.objects.filter(guest=guest, kind=XML_EVENT).order_by("-time", "-id").first()
    return event.text if event else ""


def overlays_of(guest: Guest) -> list[str]:
    d = guest_dir(guest.host.name, guest.pk)
    try:
        return sorted(p.name for p in d.glob("build-*.qcow2"))
    except OSError:
        return []


class LibvirtSide:
    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent
        self.host = agent.host
        self.watcher: LibvirtWatcher | None = None
        self.events: queue.Queue[tuple[str, list[Event], str]] = queue.Queue()
        self.error = ""

    # -- wiring -------------------------------------------------------------
    def owns(self, guest: Guest) -> bool:
        return is_libvirt(guest)

    def start(self) -> None:
        """Connect and subscribe (when the host has a libvirt URI), then re-read
        every libvirt guest's state: domains kept running while no agent was."""
        if not self.host.libvirt_uri or self.watcher is not None:
            return
        watcher = LibvirtWatcher(self.host.libvirt_uri, self._on_event, on_reconnect=self._on_reconnect)
        try:
            watcher.start()
        except lv.LibvirtGuestError as exc:
            watcher.stop()
            self.error = str(exc)
            log.warning("libvirt: %s (retrying at the next scan)", exc)
            return
        self.watcher, self.error = watcher, ""
        self.resync()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def _on_event(self, name: str, events: list[Event], reason: str) -> None:
        self.events.put((name, events, reason))
        self.agent.wake()

    def _on_reconnect(self) -> None:
        self.events.put(("", [], "reconnected"))
        self.agent.wake()

    # -- the agent's loop -------------------------------------------------------
    def drain(self) -> None:
        while not self.events.empty():
            name, events, reason = self.events.get_nowait()
            if not name:
                log.info("libvirt: reconnected to %s; re-reading domains", self.host.libvirt_uri)
                self.resync()
                continue
            guest_id = guest_id_of(name)
            guest = Guest.objects.filter(pk=guest_id, host=self.host).select_related("host").first() if guest_id else None
            if guest is None or domain_name(guest) != name:
                # Another kdevweb's domain on the same libvirtd (its own guest ids).
                continue
            self._record(guest, events, reason)

    def _record(self, guest: Guest, events: list[Event], reason: str) -> None:
        for event in events:
            self.agent._apply(guest, event)
            if event.kind == "exited":
                fields: dict[str, Any] = {"exit_text": reason[:200]}
                if guest.state in (State.CRASHED.value, State.FAILED.value):
                    fields["serial_tail"] = tail_lines(serial_log(guest), 40)
                    fields["stderr_tail"] = ""
                Guest.objects.filter(pk=guest.pk).update(**fields)
                if guest.pending_action == Action.DELETE:
                    self._delete(guest)
                    return
        if not events or reason:
            self.agent._event(guest, "libvirt", reason)

    def scan(self) -> None:
        if self.host.libvirt_uri and self.watcher is None:
            self.start()
        now = timezone.now()
        for guest in Guest.objects.filter(host=self.host, state=State.STOPPING.value, stop_deadline__lt=now):
            if not is_libvirt(guest):
                continue
            Guest.objects.filter(pk=guest.pk).update(stop_deadline=None)
            self.agent._event(guest, "force off", f"no shutdown within {self.agent.stop_timeout:g} s: forcing it off")
            self._with_domain(guest, lv.destroy)

    def resync(self) -> None:
        """Each libvirt guest's row from its domain's state now."""
        if self.watcher is None:
            return
        for guest in Guest.objects.filter(host=self.host).select_related("build__revision", "host"):
            if not is_libvirt(guest):
                continue
            try:
                dom = lv.lookup(self.watcher.conn, domain_name(guest), marker_id(guest))
            except lv.LibvirtGuestError as exc:
                self.agent._event(guest, "libvirt", str(exc))
                continue
            if dom is None:
                if guest.state in ACTIVE_STATES and guest.pending_action != Action.START:
                    self._record(guest, [Event("exited", returncode=None)], "libvirt: no such domain")
                continue
            state, why = lv.current_state(dom)
            if state is State.RUNNING and guest.state == State.STARTING.value:
                self._record(guest, [Event("started")], f"libvirt: {why} (found on re-reading)")
            elif not state.active and guest.state in ACTIVE_STATES and guest.pending_action != Action.START:
                rc = -9 if state is State.CRASHED else 0
                self._record(guest, [Event("exited", returncode=rc)], f"libvirt: {why} (found on re-reading)")

    # -- requests ------------------------------------------------------------------
    def act(self, guest: Guest, action: str) -> None:
        if action == Action.START:
            self._start(guest)
        elif action == Action.STOP:
            if self._with_domain(guest, lv.shutdown):
                deadline = timezone.now() + timedelta(seconds=self.agent.stop_timeout)
                Guest.objects.filter(pk=guest.pk).update(stop_deadline=deadline)
        elif action == Action.FORCE_OFF:
            self._with_domain(guest, lv.destroy)
        elif action == Action.REBOOT:
            self._with_domain(guest, lv.reboot)
        elif action == Action.DELETE:
            self._delete(guest)

    def _conn(self):
        if self.watcher is None:
            raise lv.LibvirtGuestError(self.error or f"not connected to libvirt at {self.host.libvirt_uri or '(no URI)'}")
        return self.watcher.conn

    def _with_domain(self, guest: Guest, fn) -> bool:
        try:
            dom = lv.lookup(self._conn(), domain_name(guest), marker_id(guest))
            if dom is None:
                raise lv.LibvirtGuestError(f"the domain {domain_name(guest)} does not exist")
            fn(dom)
            return True
        except lv.LibvirtGuestError as exc:
            self.agent._event(guest, "libvirt", str(exc))
            if guest.state in ACTIVE_STATES and fn in (lv.destroy, lv.shutdown):
                # Nothing of ours runs for it: never a stuck 'stopping'.
                self._record(guest, [Event("exited", returncode=None)], str(exc))
            return False

    def _start(self, guest: Guest) -> None:
        if guest.state != State.STARTING.value or guest.pk in self.agent.starting:
            return
        # In a thread, like QEMU guests' starts: the loop keeps applying other
        # guests' events meanwhile. In agent.starting, so requests for this
        # guest wait (the agent's _act) until the start is through.
        self.agent.starting.add(guest.pk)
        threading.Thread(target=self._start_thread, args=(guest,), name=f"libvirt-start-{guest.pk}",
                         daemon=True).start()

    def _start_thread(self, guest: Guest) -> None:
        try:
            image = Path(guest.build.out_path) / "nixos.qcow2"
            if not self.agent._in_store(guest.build.out_path) or not self.agent._in_store(image):
                raise lv.LibvirtGuestError(f"the build's image {image} is not in the Nix store")
            if not image.is_file():
                raise lv.LibvirtGuestError(f"the build's disk image {image} is missing (garbage-collected?)")
            overlay = overlay_path(guest)
            d = overlay.parent
            d.mkdir(mode=0o711, parents=True, exist_ok=True)
            for p in (IMAGE_ROOT, IMAGE_ROOT / self.host.name, d):
                p.chmod(0o711)
            if not overlay.exists():
                lv.create_overlay(image, overlay)
                self.agent._event(guest, "disk", f"new overlay {overlay.name} on the build's image")
            disks = []
            for disk in guest.disks.all():
                # Beside the overlays (libvirt's QEMU user must reach them), kept
                # across restarts and rollbacks, deleted only when asked.
                path = disk_path(guest, disk.serial)
                if not path.exists():
                    create_disk(path, disk.size_mib)
                disks.append((path, disk.serial))
            conn = self._conn()
            spec = lv.DomainSpec(name=domain_name(guest), guest_id=marker_id(guest), memory_mib=guest.memory_mib,
                                 vcpus=guest.vcpus, overlay=overlay, image=image,
                                 domain_type=lv.domain_type_for(self.host.accel or "tcg"),
                                 network=lv.pick_network(conn), serial_log=serial_log(guest),
                                 console_log=console_log(guest),
                                 disks=tuple(disks))
            dom = lv.define(conn, spec)
            self.agent._event(guest, XML_EVENT, lv.defined_xml(dom))
            self.agent._event(guest, "defined", f"domain {spec.name} on {self.host.libvirt_uri} "
                                                f"({spec.domain_type}, {'network ' + spec.network if spec.network else 'user-mode NIC'})")
            Guest.objects.filter(pk=guest.pk).update(accel=self.host.accel or "tcg", ssh_port=None, qemu_pid=None)
            lv.start(dom)  # its STARTED event makes it 'running'
        except lv.LibvirtGuestError as exc:
            self.agent._fail(guest, f"The start failed: {exc}")
        except (OSError, DiskError) as exc:
            self.agent._fail(guest, f"The start failed: {exc}")
        finally:
            connection.close()  # this thread's own database connection
            self.agent.starting.discard(guest.pk)
            self.agent.wake()

    def _delete(self, guest: Guest) -> None:
        try:
            dom = lv.lookup(self._conn(), domain_name(guest), marker_id(guest))
            if dom is not None:
                if dom.isActive():
                    lv.destroy(dom)  # its STOPPED event comes back here and deletes
                    return
                lv.undefine(dom)
        except lv.LibvirtGuestError as exc:
            self.agent._event(guest, "libvirt", str(exc))
        except Exception as exc:  # libvirt-python raises libvirtError from isActive
            self.agent._event(guest, "libvirt", f"{type(exc).__name__}: {exc}")
        # The overlays are the guest's root disks: they go with the guest; its
        # extra disks only when the user asked.
        d = guest_dir(self.host.name, guest.pk)
        if guest.delete_disks:
            shutil.rmtree(d, ignore_errors=True)
        else:
            for path in [*d.glob("build-*.qcow2"), *d.glob("serial.log*"), *d.glob("hvc0.log*")]:
                path.unlink(missing_ok=True)
        self.agent._delete(guest)
