"""Guest lifecycle services: what the buttons do (web tier side).

Each service checks and records a user's request in the guest row under a
row lock, then wakes the guest's host agent (guests.hostrequests) once the
transaction commits. The agent does the work and records what it saw.
The path from the Start button to QEMU's argv: guests/guest_views.py
(guest_action) -> here (guest_start) -> guests/hostagent.py (_start, which
calls guests.runtime.launch.start_guest / runtime.qemu.qemu_argv).

Everything a user typed is checked here and again by the agent before use
(share directories under the host's roots, the kernel command line).
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from builds.models import Build, Status
from guests.runtime import kernel as rt_kernel
from guests.runtime.bootspec import BootSpecError, read_bootspec
from guests.runtime.qemu import KernelCommandLineError, check_cmdline_part
from guests.runtime.shares import ShareError, resolve_share
from guests.runtime.state import InvalidTransition, State, transition
from guests.runtime.state import Event as StateEvent

from . import hostrequests
from .models import Lab
from .vm_models import ACTIVE_STATES, Action, Guest, GuestDisk, GuestEvent, GuestShare, Host, Kernel

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_BY_ID = re.compile(r"/dev/disk/by-id/virtio-([A-Za-z0-9][A-Za-z0-9_.-]{0,19})")
MAX_DISKS = 16
log = logging.getLogger("kdevweb.guests")


def event_add(*, guest: Guest, kind: str, text: str = "", user=None, source: str = "user") -> GuestEvent:
    return GuestEvent.objects.create(guest=guest, kind=kind, text=text, user=user, source=source, state=guest.state)


def _wake(guest: Guest, action: str) -> None:
    request = hostrequests.Request(guest.pk, action, guest.request_id)
    queue = guest.host.request_queue
    transaction.on_commit(lambda: hostrequests.send(queue, request))


def disk_serial(device: str, index: int) -> str:
    """The serial the guest will see: the one its configuration names
    (``/dev/disk/by-id/virtio-<serial>``), else a stable ``disk<n>``."""
    match = _BY_ID.fullmatch(device or "")
    return match.group(1) if match else f"disk{index}"


def kernel_add(*, host: Host, name: str, image: str, modules_dir: str, user, is_default: bool = False) -> Kernel:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("Give the kernel a name of 1–100 characters.")
    try:
        version = rt_kernel.check_kernel(Path(image), Path(modules_dir))
    except rt_kernel.KernelError as exc:
        raise ValidationError(str(exc)) from None
    config = Path(image).with_name(f"config-{version}")
    if not config.is_file():
        config = Path(modules_dir) / "build" / ".config"
    missing = rt_kernel.imageless_missing(Path(modules_dir), config if config.is_file() else None)
    try:
        with transaction.atomic():
            return Kernel.objects.create(host=host, name=name, image=image, modules_dir=modules_dir,
                                         version=version, added_by=user, is_default=is_default,
                                         imageless_missing=missing)
    except IntegrityError:
        raise ValidationError(f"{host} already has a kernel named “{name}”.") from None


def _check_build(build: Build, lab: Lab) -> None:
    if build.lab_id != lab.pk:
        raise ValidationError("That build is not in this lab.")
    if build.status != Status.SUCCEEDED or not build.out_path:
        raise ValidationError(f"Build #{build.pk} has not succeeded; only a succeeded build can run.")
    if build.revision.settings.get("backend") not in ("imageless", "libvirt"):
        raise ValidationError(f"Build #{build.pk} is neither an imageless nor a libvirt build.")


def _check_boot(build: Build) -> None:
    if build.revision.settings.get("backend") == "libvirt":
        # A libvirt guest boots the build's disk image (guests.libvirt_agent).
        if not (Path(build.out_path) / "nixos.qcow2").is_file():
            raise ValidationError(f"Build #{build.pk}'s disk image is gone (garbage-collected?); rebuild it.")
        return
    try:
        read_bootspec(build.out_path)
    except BootSpecError as exc:
        raise ValidationError(str(exc)) from None


def guest_create(
    *, lab: Lab, build: Build, name: str, host: Host, kernel: Kernel, memory_mib: int | None = None,
    vcpus: int | None = None, extra_cmdline: str = "", disk_sizes: dict[str, int] | None = None,
    share_paths: dict[str, tuple[str, bool]] | None = None, user,
) -> Guest:
    """A defined guest; disks are created by the agent at its first start."""
    _check_build(build, lab)
    settings = build.revision.settings
    if settings.get("backend") == "libvirt" and not host.libvirt_uri:
        raise ValidationError(f"Host {host} has no libvirt URI; a libvirt build runs only on a host that has one.")
    if not _NAME.fullmatch(name or ""):
        raise ValidationError("A guest name is 1–63 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit.")
    if kernel.host_id != host.pk:
        raise ValidationError(f"Kernel {kernel} is not on host {host}.")
    memory_mib = memory_mib or int(settings.get("memoryMiB") or 1024)
    vcpus = vcpus or int(settings.get("vcpus") or 2)
    if not 128 <= memory_mib <= host.memory_budget_mib:
        raise ValidationError(f"Memory must be between 128 MiB and the host's budget of {host.memory_budget_mib} MiB.")
    if not 1 <= vcpus <= 64:
        raise ValidationError("vCPUs must be between 1 and 64.")
    try:
        extra_cmdline = check_cmdline_part(extra_cmdline or "")
    except KernelCommandLineError as exc:
        raise ValidationError(f"Extra kernel arguments: {exc}") from None
    storage = settings.get("storage") or {}
    disk_sizes = disk_sizes or {}
    default_size = int(settings.get("diskSizeMiB") or 20480)
    if len(storage) > MAX_DISKS:
        raise ValidationError(f"At most {MAX_DISKS} disks.")
    shares = settings.get("shares") or {}
    share_paths = share_paths or {}
    resolved = {}
    for mount, share in sorted(shares.items()):
        tag = share["tag"]
        path, read_only = share_paths.get(tag, ("", False))
        if not path:
            raise ValidationError(f"Share “{tag}” ({mount}) needs a host directory.")
        try:
            resolved[tag] = (mount, str(resolve_share(path, host.roots)), read_only)
        except (ShareError, OSError) as exc:
            raise ValidationError(f"Share “{tag}”: {exc}") from None
    try:
        with transaction.atomic():
            guest = Guest.objects.create(lab=lab, name=name, configuration=build.revision.configuration, build=build,
                                         host=host, kernel=kernel, extra_cmdline=extra_cmdline,
                                         memory_mib=memory_mib, vcpus=vcpus, created_by=user)
            serials = set()
            for index, (mount, drive) in enumerate(sorted(storage.items())):
                serial = disk_serial(drive.get("device", ""), index)
                if serial in serials:
                    serial = f"disk{index}"
                serials.add(serial)
                size = int(disk_sizes.get(mount) or default_size)
                if not 1 <= size <= rt_kernel_max_disk():
                    raise ValidationError(f"Disk for {mount}: size must be 1–{rt_kernel_max_disk()} MiB.")
                GuestDisk.objects.create(guest=guest, mount_point=mount, device=drive.get("device", ""),
                                         size_mib=size, serial=serial,
                                         path=disk_file(guest, serial))
            for tag, (mount, path, read_only) in resolved.items():
                GuestShare.objects.create(guest=guest, tag=tag, mount_point=mount, host_path=path,
                                          read_only=read_only)
            event_add(guest=guest, kind="created", user=user,
                      text=f"from build #{build.pk} ({build.revision}) on {host}, kernel {kernel}")
    except IntegrityError:
        raise ValidationError(f"The lab already has a guest named “{name}”.") from None
    return guest


def disk_file(guest: Guest, serial: str) -> str:
    """Where the guest's disk with ``serial`` lives on its host: libvirt
    guests keep theirs beside their overlays (guests.libvirt_agent)."""
    if guest.build.revision.settings.get("backend") == "libvirt":
        from guests.libvirt_agent import disk_path

        return str(disk_path(guest, serial))
    return str(guest.host.guest_disk_dir(guest.pk) / f"{serial}.qcow2")


def rt_kernel_max_disk() -> int:
    from guests.runtime.disks import MAX_DISK_MIB

    return MAX_DISK_MIB


def _locked(guest: Guest) -> Guest:
    current = Guest.objects.select_for_update().select_related("host", "build__revision", "kernel").filter(
        pk=guest.pk).first()
    if current is None:
        raise ValidationError("The guest no longer exists.")
    if current.pending_action == Action.DELETE:
        raise ValidationError("The guest is being deleted.")
    return current


def _request(guest: Guest, action: str) -> None:
    guest.pending_action = action
    guest.request_id = uuid.uuid4().hex


def guest_start(*, guest: Guest, user, note: str = "") -> Guest:
    """Ask for a start: one QEMU however often it is asked (row lock + state).
    Also the host agent's second half of "roll back and restart" (``note`` says so)."""
    with transaction.atomic():
        # The host row first: starts on one host are serialised, so two
        # guests cannot both fit into the last of its memory budget.
        Host.objects.select_for_update().filter(pk=guest.host_id).first()
        current = _locked(guest)
        try:
            outcome = transition(State(current.state), StateEvent("start"))
        except InvalidTransition as exc:
            raise ValidationError(f"Cannot start {current.name}: {exc}.") from None
        host = current.host
        used = (Guest.objects.filter(host=host, state__in=ACTIVE_STATES).exclude(pk=current.pk)
                .aggregate(m=Sum("memory_mib"))["m"] or 0)
        if used + current.memory_mib > host.memory_budget_mib:
            raise ValidationError(
                f"Starting {current.name} ({current.memory_mib} MiB) would exceed host {host}'s memory budget: "
                f"{used} of {host.memory_budget_mib} MiB are in use by running guests.")
        # Checked here so the common mistakes answer at once, on the page;
        # the agent checks again (things change between now and the start).
        _check_boot(current.build)
        if not Path(current.kernel.image).exists():
            raise ValidationError(f"The kernel image {current.kernel.image} is gone; choose another kernel.")
        for share in current.shares.all():
            try:
                resolve_share(share.host_path, host.roots)
            except (ShareError, OSError) as exc:
                raise ValidationError(f"Share “{share.tag}”: {exc}") from None
        current.state = outcome.state.value
        current.stopping_expected = current.start_after_stop = False
        current.start_requested = timezone.now()
        current.started_by = user
        current.error = current.exit_text = current.stderr_tail = current.serial_tail = ""
        current.exit_status = None
        _request(current, Action.START)
        current.save()
        event_add(guest=current, kind="start", user=user,
                  text=f"build #{current.build_id}" + (f" ({note})" if note else ""))
        _wake(current, Action.START)
    return current


def guest_stop(*, guest: Guest, user, force: bool = False) -> Guest:
    """ACPI shutdown (the agent forces it off after STOP_TIMEOUT), or force off."""
    with transaction.atomic():
        current = _locked(guest)
        if current.state not in ACTIVE_STATES:
            raise ValidationError(f"{current.name} is {current.state}, not running.")
        if not force and current.state == State.STOPPING.value:
            raise ValidationError(f"{current.name} is already shutting down; use Force off to end it now.")
        outcome = transition(State(current.state), StateEvent("stop"))
        current.state = outcome.state.value
        current.stopping_expected = True
        action = Action.FORCE_OFF if force else Action.STOP
        _request(current, action)
        current.save()
        event_add(guest=current, kind="force off" if force else "shutdown", user=user)
        _wake(current, action)
    return current


def guest_force_off(*, guest: Guest, user) -> Guest:
    return guest_stop(guest=guest, user=user, force=True)


def guest_reboot(*, guest: Guest, user) -> Guest:
    with transaction.atomic():
        current = _locked(guest)
        if current.state != State.RUNNING.value:
            raise ValidationError(f"{current.name} is {current.state}; only a running guest can be rebooted.")
        _request(current, Action.REBOOT)
        current.save()
        event_add(guest=current, kind="reboot", user=user)
        _wake(current, Action.REBOOT)
    return current


def guest_delete(*, guest: Guest, user, delete_disks: bool = False, delete_transcripts: bool = False) -> Guest:
    """The agent stops its processes and removes its run dir, its disks and
    its console transcripts only if asked (the transcripts once the console
    relay of the guest stopped), then the row."""
    with transaction.atomic():
        current = _locked(guest)
        current.delete_disks = delete_disks
        current.delete_transcripts = delete_transcripts
        current.start_after_stop = False
        if current.state in ACTIVE_STATES:
            current.stopping_expected = True
        _request(current, Action.DELETE)
        current.save()
        text = (f"disks {'deleted' if delete_disks else 'kept'}, "
                f"console transcripts {'deleted' if delete_transcripts else 'kept'}")
        event_add(guest=current, kind="delete", user=user, text=text)
        # The row and its timeline go with the guest: the log keeps who chose what.
        log.info("%s asked to delete guest %s (%s) of lab %s: %s", getattr(user, "username", user), current.pk,
                 current.name, current.lab_id, text)
        _wake(current, Action.DELETE)
    return current


def guest_rollback(*, guest: Guest, build: Build, user, restart: bool = False) -> Guest:
    """Run another succeeded build of the same configuration (older or newer).

    A stopped guest runs it from its next start. A running one only with
    ``restart``: shut down (ACPI, forced off after the agent's timeout), then
    started on the new build by the host agent once it has stopped
    (guests.agent_followups), both as the usual requests. Refused while it
    is starting or stopping, where no clean stop can be asked for."""
    with transaction.atomic():
        current = _locked(guest)
        running = current.state == State.RUNNING.value
        if current.state in ACTIVE_STATES and not running:
            raise ValidationError(f"{current.name} is {current.state}; switch builds once it is running or stopped.")
        if running and not restart:
            raise ValidationError(f"Stop {current.name} first, or switch builds with a restart; it is running.")
        if build.revision.configuration_id != current.configuration_id:
            raise ValidationError(f"Build #{build.pk} is of another configuration.")
        _check_build(build, current.lab)
        if build.pk == current.build_id:
            raise ValidationError(f"{current.name} already runs build #{build.pk}.")
        if running:
            _check_boot(build)  # a restart that cannot start is refused before the guest goes down
        old = current.build
        current.build = build
        direction = "rolled back" if build.pk < old.pk else "moved forward"
        keep = (" (a new root disk overlay for that build; the old one is kept until the guest is deleted)"
                if build.revision.settings.get("backend") == "libvirt" else "")
        if running:
            current.state = transition(State(current.state), StateEvent("stop")).state.value
            current.stopping_expected = current.start_after_stop = True
            _request(current, Action.STOP)
        current.save()
        event_add(guest=current, kind="rollback", user=user,
                  text=f"{direction} from build #{old.pk} ({old.revision}) to #{build.pk} ({build.revision}){keep}"
                       + ("; shutting down to restart on it" if running else ""))
        if running:
            event_add(guest=current, kind="shutdown", user=user, text=f"to restart on build #{build.pk}")
            _wake(current, Action.STOP)
    return current
