"""QEMU's argv for an imageless guest, from a typed spec (no side effects).

The device set follows upstream's launcher (kdevops ``scripts/qemu-system-units``)
where QEMU 7.2 has the same devices: q35, ``-cpu host`` under KVM, modern-only
(``-non-transitional``) virtio devices, a virtio RNG, guest RAM in a shared
memfd so vhost-user-fs (virtiofsd) can map it, and a user-mode NIC whose
guest port 22 is forwarded to a loopback port.

Every file QEMU uses sits in one run directory (:class:`RunDir`), so the
owner of a guest can find, adopt and clean up all of it from one path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

QEMU = "qemu-system-x86_64"
Accel = Literal["kvm", "tcg"]

# x86 COMMAND_LINE_SIZE is 2048 including the final NUL; a longer line is
# silently truncated by the kernel, which could cut init= off.
MAX_CMDLINE = 2047
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH = 107
# virtio-fs tags are at most 36 bytes; virtio-blk serials 20 (VIRTIO_BLK_ID_BYTES).
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,35}")
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Tags the launcher itself uses for the imageless contract.
RESERVED_TAGS = frozenset({"store", "modules"})


class SpecError(ValueError):
    """A guest spec QEMU must not be started with; the message says why."""


class KernelCommandLineError(SpecError):
    """Extra kernel arguments that are unsafe or too long."""


def _check_path(what: str, path: Path) -> str:
    text = str(path)
    if not path.is_absolute():
        raise SpecError(f"{what} must be an absolute path, got {text!r}")
    if any(ch in text for ch in "\0\n\r"):
        raise SpecError(f"{what} contains a control character: {text!r}")
    return text


def _opt(value: str) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled,
    otherwise a path with a comma would start a new (attacker-chosen) key."""
    return value.replace(",", ",,")


def check_cmdline_part(text: str, *, what: str = "extra kernel arguments") -> str:
    """``text`` stripped, or KernelCommandLineError.

    Newlines and other control characters are refused: the line is one argv
    element (no shell), but a newline would end the kernel's command line
    in bootloader configs and logs, and NUL cannot be passed at all.
    """
    bad = sorted({f"U+{ord(ch):04X}" for ch in text if ord(ch) < 0x20 or ord(ch) == 0x7F})
    if bad:
        raise KernelCommandLineError(f"{what} must be one line without control characters (found {', '.join(bad)})")
    if len(text.encode("utf-8")) > MAX_CMDLINE:
        raise KernelCommandLineError(f"{what} are longer than the kernel's limit of {MAX_CMDLINE} bytes")
    return " ".join(text.split())


@dataclass(frozen=True)
class Disk:
    """A virtio-blk disk; ``serial`` is what the guest sees in /dev/disk/by-id."""

    path: Path
    serial: str
    format: Literal["qcow2", "raw"] = "qcow2"
    read_only: bool = False


@dataclass(frozen=True)
class Share:
    """An extra virtio-fs share: guest ``tag`` served by a virtiofsd on ``socket``."""

    tag: str
    socket: Path


@dataclass(frozen=True)
class RunDir:
    """Names of the files of one guest's run directory (nothing is created)."""

    path: Path

    @property
    def qmp_socket(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def serial_socket(self) -> Path:
        return self.path / "serial.sock"

    @property
    def serial_log(self) -> Path:
        return self.path / "serial.log"

    @property
    def console_socket(self) -> Path:
        return self.path / "console.sock"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_pid(self) -> Path:
        return self.path / "qemu.pid"

    @property
    def qemu_stderr(self) -> Path:
        return self.path / "qemu.stderr"

    def virtiofsd_socket(self, tag: str) -> Path:
        return self.path / f"virtiofsd-{tag}.sock"

    def virtiofsd_pid(self, tag: str) -> Path:
        return self.path / f"virtiofsd-{tag}.pid"

    def virtiofsd_stderr(self, tag: str) -> Path:
        return self.path / f"virtiofsd-{tag}.stderr"


@dataclass(frozen=True)
class GuestSpec:
    """Everything QEMU needs to boot one imageless guest.

    ``init`` and ``initrd`` come from the build's boot.json, ``kernel`` is
    the external kernel (its modules are served as tag ``modules``).
    ``boot_params`` are the configuration's own ``kernelParams`` from
    boot.json (NixOS puts them on the line; the imageless backend sets
    none); ``extra_cmdline`` is what the user typed, validated here.
    """

    kernel: Path
    initrd: Path
    init: str
    run_dir: RunDir
    memory_mib: int = 1024
    vcpus: int = 2
    accel: Accel = "tcg"
    name: str = ""
    disks: tuple[Disk, ...] = ()
    shares: tuple[Share, ...] = ()
    ssh_port: int | None = None
    boot_params: tuple[str, ...] = ()
    extra_cmdline: str = ""
    # Start with the CPUs stopped (QMP ``cont`` runs them): lets a caller
    # attach to the consoles before the first byte.
    paused: bool = False
    # A guest reboot ends QEMU (status 0, QMP SHUTDOWN reason guest-reset).
    no_reboot: bool = False
    qemu: str = QEMU
    # Appended unchecked: for the host's own configuration and tests, never
    # for anything a user typed (that goes through extra_cmdline).
    extra_args: tuple[str, ...] = field(default=(), repr=False)


def kernel_cmdline(spec: GuestSpec) -> str:
    """``root=tmpfs console=ttyS0,115200 console=hvc0 init=<init>``, then the
    configuration's own parameters, then the user's extra arguments (last,
    so a user can override a parameter the kernel reads last-wins)."""
    init = spec.init
    if not init.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in init):
        raise SpecError(f"init from boot.json must be an absolute path without spaces, got {init!r}")
    base = ["root=tmpfs", "console=ttyS0,115200", "console=hvc0", f"init={init}"]
    params = [p for p in spec.boot_params if p not in base]
    for param in params:
        check_cmdline_part(param, what="boot.json kernelParams")
    line = " ".join([*base, *params])
    extra = check_cmdline_part(spec.extra_cmdline)
    if extra:
        line = f"{line} {extra}"
    if len(line.encode("utf-8")) > MAX_CMDLINE:
        raise KernelCommandLineError(
            f"the kernel command line would be {len(line.encode('utf-8'))} bytes, "
            f"over the kernel's limit of {MAX_CMDLINE}; shorten the extra kernel arguments"
        )
    return line


def _socket(what: str, path: Path) -> str:
    text = _check_path(what, path)
    if len(text.encode("utf-8")) > MAX_SOCKET_PATH:
        raise SpecError(f"{what} {text!r} is longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes)")
    return _opt(text)


def _validate(spec: GuestSpec) -> None:
    if spec.accel not in ("kvm", "tcg"):
        raise SpecError(f"accelerator must be 'kvm' or 'tcg', got {spec.accel!r}")
    if not 128 <= spec.memory_mib <= 1024 * 1024:
        raise SpecError(f"memory must be between 128 MiB and 1 TiB, got {spec.memory_mib} MiB")
    if not 1 <= spec.vcpus <= 255:
        raise SpecError(f"vCPUs must be between 1 and 255, got {spec.vcpus}")
    if spec.name and not _NAME.fullmatch(spec.name):
        raise SpecError(f"guest name {spec.name!r}: letters, digits, '.', '_', '-' only (at most 63)")
    if spec.ssh_port is not None and not 1 <= spec.ssh_port <= 65535:
        raise SpecError(f"SSH port must be 1-65535, got {spec.ssh_port}")
    tags = [share.tag for share in spec.shares]
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise SpecError(f"share tag {tag!r}: letters, digits, '.', '_', '-' only, at most 36")
        if tag in RESERVED_TAGS:
            raise SpecError(f"share tag {tag!r} is reserved for the imageless boot")
    if len(set(tags)) != len(tags):
        raise SpecError("share tags must be unique")
    serials = [disk.serial for disk in spec.disks]
    for serial in serials:
        if not _SERIAL.fullmatch(serial):
            raise SpecError(f"disk serial {serial!r}: letters, digits, '.', '_', '-' only, at most 20")
    if len(set(serials)) != len(serials):
        raise SpecError("disk serials must be unique")


def qemu_argv(spec: GuestSpec) -> list[str]:
    """QEMU's argv for ``spec``; raises SpecError (or KernelCommandLineError).

    The serial line and the virtio console are unix-socket servers that do
    not wait for a client, each with a ``logfile=``: QEMU writes every
    byte the guest sends to the log whether or not a viewer is connected,
    so nothing is lost before one attaches (the log restarts with QEMU).
    """
    _validate(spec)
    run = spec.run_dir
    mem = spec.memory_mib
    argv = [
        spec.qemu,
        "-no-user-config", "-nodefaults", "-display", "none",
        "-msg", "timestamp=on",  # stderr lines get times, for crash reports
        "-machine", "q35,memory-backend=mem",
        "-accel", spec.accel,
        # KVM: the host CPU, as upstream. TCG: every feature TCG emulates
        # (the default qemu64 lacks ones distribution kernels expect).
        "-cpu", "host" if spec.accel == "kvm" else "max",
        "-m", str(mem), "-smp", str(spec.vcpus),
        # vhost-user-fs needs guest RAM that virtiofsd can map: a shared memfd.
        "-object", f"memory-backend-memfd,id=mem,size={mem}M,share=on",
        "-kernel", _check_path("kernel", spec.kernel),
        "-initrd", _check_path("initrd", spec.initrd),
        "-append", kernel_cmdline(spec),
        "-chardev", f"socket,id=qmp,path={_socket('QMP socket', run.qmp_socket)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", (f"socket,id=serial0,path={_socket('serial socket', run.serial_socket)},server=on,wait=off,"
                     f"logfile={_opt(_check_path('serial log', run.serial_log))}"),
        "-serial", "chardev:serial0",
        "-device", "virtio-serial-pci-non-transitional,id=vser0",
        "-chardev", (f"socket,id=console0,path={_socket('console socket', run.console_socket)},server=on,wait=off,"
                     f"logfile={_opt(_check_path('console log', run.console_log))}"),
        "-device", "virtconsole,bus=vser0.0,chardev=console0",
        "-device", "virtio-rng-pci-non-transitional",
    ]
    if spec.name:
        argv += ["-name", f"guest={spec.name}"]
    fs = [("store", run.virtiofsd_socket("store")), ("modules", run.virtiofsd_socket("modules"))]
    fs += [(share.tag, share.socket) for share in spec.shares]
    for index, (tag, sock) in enumerate(fs):
        argv += [
            "-chardev", f"socket,id=vfs{index},path={_socket(f'virtiofs socket for {tag}', sock)}",
            "-device", f"vhost-user-fs-pci,queue-size=1024,chardev=vfs{index},tag={tag}",
        ]
    for index, disk in enumerate(spec.disks):
        read_only = "on" if disk.read_only else "off"
        argv += [
            "-blockdev", (f"driver={disk.format},node-name=disk{index},read-only={read_only},"
                          f"file.driver=file,file.filename={_opt(_check_path('disk', disk.path))}"),
            "-device", f"virtio-blk-pci-non-transitional,id=vdisk{index},drive=disk{index},serial={disk.serial}",
        ]
    nic = "user,model=virtio-net-pci-non-transitional"
    if spec.ssh_port is not None:
        nic += f",hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"
    argv += ["-nic", nic]
    if spec.paused:
        argv.append("-S")
    if spec.no_reboot:
        argv.append("-no-reboot")
    argv += list(spec.extra_args)
    return argv
