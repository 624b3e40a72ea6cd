"""libvirt guests (nixos-flake's libvirt mode): domain XML and lifecycle.

A libvirt guest boots its build's disk image (``nixos.qcow2``, a store
path) through a per-guest qcow2 **overlay** backed by it, so nothing is
ever written into ``/nix/store``: libvirt is told not to relabel the
backing file either (its DAC driver would chown it and leave xattrs).
Everything goes through libvirt-python; domains are marked with kdevweb's
metadata element, and a domain without the marker (someone else's) is
never changed: defining over it, or over another guest's domain of the
same name, is refused with :class:`NameClash`.

State comes from libvirt's domain events (:mod:`.libvirt_events`); this
module also reads a domain's state once (after the host agent restarts)
as a :class:`~.state.State` with libvirt's reason.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

import libvirt

from guests.runtime.state import State

DEFAULT_URI = "qemu:///system"
MARKER_NS = "urn:kdevweb:libvirt-guest:1"
MARKER_PREFIX = "kdevweb"
STORE = "/nix/store"
DomainType = Literal["kvm", "qemu"]


class LibvirtGuestError(Exception):
    """A libvirt operation failed; the message is for the guest page."""


class NameClash(LibvirtGuestError):
    """A domain with the name kdevweb would use exists and is not this guest's."""


class NotOurs(LibvirtGuestError):
    """The domain exists but kdevweb did not create it: it is left alone."""


def domain_type_for(accel: str) -> DomainType:
    """libvirt's domain type for the accelerator the host's probe chose."""
    return "kvm" if accel == "kvm" else "qemu"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    guest_id: str            # kdevweb's id of the guest, kept in the marker
    memory_mib: int
    vcpus: int
    overlay: Path            # the per-guest qcow2 (created by create_overlay)
    image: Path              # the build's image in the store (the overlay's backing file)
    domain_type: DomainType = "qemu"
    network: str | None = None  # a libvirt network name; None: user-mode NIC
    serial_log: Path | None = None  # virtlogd copies the serial output here
    # The virtio console (the guest's hvc0), logged the same way; None: no virtio console.
    console_log: Path | None = None
    # Extra disks (the configuration's storage mounts): (qcow2 path, serial)
    # as vdb, vdc...; the guest finds them as /dev/disk/by-id/virtio-<serial>.
    disks: tuple[tuple[Path, str], ...] = ()
    extra_marker: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if not self.name or len(self.name) > 64 or not all(c.isalnum() or c in "-_." for c in self.name):
            raise LibvirtGuestError(f"not a usable domain name: {self.name!r}")
        if not 16 <= self.memory_mib <= 1024 * 1024:
            raise LibvirtGuestError(f"memory {self.memory_mib} MiB is out of range")
        if not 1 <= self.vcpus <= 256:
            raise LibvirtGuestError(f"{self.vcpus} vCPUs is out of range")
        if _inside(self.overlay, STORE):
            raise LibvirtGuestError("the overlay must not be in the Nix store")
        if len(self.disks) > 20:
            raise LibvirtGuestError("at most 20 extra disks")
        for path, serial in self.disks:
            if _inside(path, STORE):
                raise LibvirtGuestError("a disk must not be in the Nix store")
            if not serial or len(serial) > 20 or not all(c.isalnum() or c in "-_." for c in serial):
                raise LibvirtGuestError(f"not a usable disk serial: {serial!r}")
        if self.domain_type not in ("kvm", "qemu"):
            raise LibvirtGuestError(f"unknown domain type {self.domain_type!r}")


def _inside(path: Path, root: str) -> bool:
    resolved = os.path.realpath(path)
    return resolved == root or resolved.startswith(root.rstrip("/") + "/")


def create_overlay(image: Path, overlay: Path, *, qemu_img: str = "qemu-img") -> None:
    """A new qcow2 ``overlay`` backed by the store ``image`` (never overwritten).

    The overlay's directory must be searchable by libvirt's QEMU user: libvirt
    chowns the file itself, not its parents.
    """
    if not image.is_file():
        raise LibvirtGuestError(f"the build's disk image {image} is missing (garbage-collected?)")
    if _inside(overlay, STORE):
        raise LibvirtGuestError("the overlay must not be in the Nix store")
    if overlay.exists():
        raise LibvirtGuestError(f"the overlay {overlay.name} exists already")
    overlay.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LibvirtGuestError(f"qemu-img could not create the overlay: {proc.stderr.strip()[-300:]}")


def domain_xml(spec: DomainSpec) -> str:
    """The domain kdevweb defines for ``spec`` (pure)."""
    spec.check()
    q = quoteattr
    marker_attrs = {"guest": spec.guest_id, "image": str(spec.image), **spec.extra_marker}
    marker = " ".join(f"{k}={q(v)}" for k, v in sorted(marker_attrs.items()) if k.isidentifier())
    if spec.network:
        nic = f"<interface type='network'><source network={q(spec.network)}/><model type='virtio'/></interface>"
    else:
        nic = "<interface type='user'><model type='virtio'/></interface>"
    log = f"<log file={q(str(spec.serial_log))} append='off'/>" if spec.serial_log else ""
    # console0 is the serial line (libvirt's alias of serial0); console1 the
    # virtio console, opened by that alias (guests/runtime/libvirt_console.py).
    hvc = (f"\n    <console type='pty'><target type='virtio' port='1'/>"
           f"<log file={q(str(spec.console_log))} append='off'/></console>") if spec.console_log else ""
    extra = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file={q(str(path))}/>"
        f"<target dev='vd{chr(ord('b') + i)}' bus='virtio'/><serial>{_text(serial)}</serial></disk>\n    "
        for i, (path, serial) in enumerate(spec.disks))
    return f"""<domain type={q(spec.domain_type)}>
  <name>{_text(spec.name)}</name>
  <metadata>
    <{MARKER_PREFIX}:guest xmlns:{MARKER_PREFIX}={q(MARKER_NS)} {marker}/>
  </metadata>
  <memory unit='MiB'>{int(spec.memory_mib)}</memory>
  <vcpu>{int(spec.vcpus)}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={q(str(spec.overlay))}/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file={q(str(spec.image))}><seclabel model='dac' relabel='no'/></source>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    {extra}{nic}
    <serial type='pty'><target port='0'/>{log}</serial>
    <console type='pty'><target type='serial' port='0'/></console>{hvc}
  </devices>
</domain>
"""


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- connections and lookups ------------------------------------------------

def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


def connect(uri: str = DEFAULT_URI) -> libvirt.virConnect:
    # libvirt's default handler prints every error on stderr, including the
    # "domain not found" of lookups that are expected to miss.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtGuestError(f"cannot reach libvirt at {uri}: {_message(exc)}") from exc
    if conn is None:  # older bindings return None instead of raising
        raise LibvirtGuestError(f"cannot reach libvirt at {uri}")
    return conn


def pick_network(conn: libvirt.virConnect, preferred: str = "default") -> str | None:
    """``preferred`` when that network exists and is active, else None (user-mode)."""
    try:
        net = conn.networkLookupByName(preferred)
        return preferred if net.isActive() else None
    except libvirt.libvirtError:
        return None


def marker_of(dom: libvirt.virDomain) -> dict[str, str] | None:
    """kdevweb's marker attributes of ``dom``, None when it has none."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, MARKER_NS)
    except libvirt.libvirtError:
        return None
    try:
        return dict(ET.fromstring(text).attrib)
    except ET.ParseError:
        return None


def lookup(conn: libvirt.virConnect, name: str, guest_id: str) -> libvirt.virDomain | None:
    """This guest's domain, None when there is none; NotOurs for anyone else's."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise LibvirtGuestError(f"libvirt: {_message(exc)}") from exc
    marker = marker_of(dom)
    if marker is None:
        raise NotOurs(f"a domain named {name!r} exists and kdevweb did not create it: it is left alone "
                      "(rename or remove it with virsh, or choose another guest name)")
    if marker.get("guest") != guest_id:
        raise NameClash(f"a domain named {name!r} belongs to another kdevweb guest ({marker.get('guest')})")
    return dom


def _call(what: str, fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        raise LibvirtGuestError(f"libvirt could not {what}: {_message(exc)}") from exc


# --- lifecycle ------------------------------------------------------------------

def define(conn: libvirt.virConnect, spec: DomainSpec) -> libvirt.virDomain:
    """Define (or redefine, when it is this guest's and shut off) the domain."""
    xml = domain_xml(spec)
    existing = lookup(conn, spec.name, spec.guest_id)  # NotOurs / NameClash propagate
    if existing is not None and existing.isActive():
        raise LibvirtGuestError(f"the domain {spec.name!r} is running; stop it first")
    if existing is not None:
        # Same name, same guest: keep libvirt's UUID or it refuses the redefinition.
        xml = xml.replace("<name>", f"<uuid>{existing.UUIDString()}</uuid>\n  <name>", 1)
    return _call("define the domain", conn.defineXML, xml)


def start(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        return
    _call("start the domain", dom.create)


def shutdown(dom: libvirt.virDomain) -> None:
    """An ACPI power-button press (the agent forces off after its timeout)."""
    _call("shut the domain down", dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)


def destroy(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        _call("force the domain off", dom.destroy)


def reboot(dom: libvirt.virDomain) -> None:
    """A hard reset, like the QEMU guests' reboot (QMP system_reset): an
    ACPI reboot request is a power-button press, which powers the stand-in
    off. libvirt reports it as a reboot event."""
    _call("reboot the domain", dom.reset, 0)


def undefine(dom: libvirt.virDomain, *, overlays: list[Path] | tuple[Path, ...] = ()) -> None:
    """Force off, undefine, then remove the given overlays (and nothing else)."""
    destroy(dom)
    _call("undefine the domain", dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    for overlay in overlays:
        if not _inside(overlay, STORE):
            Path(overlay).unlink(missing_ok=True)


def defined_xml(dom: libvirt.virDomain) -> str:
    """The persistent definition as libvirt holds it (shown read-only)."""
    return _call("read the domain's XML", dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)


def serial_pty(dom: libvirt.virDomain) -> str | None:
    """The running domain's serial pty path (``/dev/pts/N``)."""
    root = ET.fromstring(_call("read the domain's XML", dom.XMLDesc, 0))
    source = root.find("./devices/serial/source")
    return None if source is None else source.get("path")


# libvirt's (state, reason) -> our State and words. SHUTOFF's reasons tell a
# guest power-off from a destroy or a crash.
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: ("stopped", "shut off"),
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: ("stopped", "shut off: the guest powered off"),
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: ("crashed", "shut off: destroyed (forced off)"),
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: ("crashed", "shut off: the guest crashed"),
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: ("failed", "shut off: the domain failed to start"),
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: ("stopped", "shut off: saved"),
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: ("stopped", "shut off: migrated away"),
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: ("stopped", "shut off: reverted to a snapshot"),
}


def current_state(dom: libvirt.virDomain) -> tuple[State, str]:
    """The domain's state now as a :class:`State` and libvirt's reason in words."""
    state, reason = _call("read the domain's state", dom.state)
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
                 libvirt.VIR_DOMAIN_PMSUSPENDED):
        return State.RUNNING, "running" if state != libvirt.VIR_DOMAIN_PAUSED else "paused"
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return State.STOPPING, "shutting down"
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return State.CRASHED, "crashed"
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        value, words = _SHUTOFF_REASONS.get(reason, ("stopped", f"shut off (reason {reason})"))
        return State(value), words
    return State.STOPPED, f"libvirt state {state}"
