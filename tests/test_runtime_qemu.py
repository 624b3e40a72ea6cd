"""guests.runtime.qemu: the argv QEMU gets for an imageless guest, and what is refused."""

from __future__ import annotations

import ast
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from guests.runtime import qemu as qemu_mod
from guests.runtime.qemu import (
    MAX_CMDLINE,
    Disk,
    GuestSpec,
    KernelCommandLineError,
    RunDir,
    Share,
    SpecError,
    kernel_cmdline,
    qemu_argv,
)

RUN = RunDir(Path("/run/kdevweb/guests/g1"))
INIT = "/nix/store/abc-nixos-system-vm/init"


def spec(**changes) -> GuestSpec:
    base = GuestSpec(kernel=Path("/boot/vmlinuz-6.1.0-57-amd64"), initrd=Path("/nix/store/abc-initrd/initrd"),
                     init=INIT, run_dir=RUN)
    return replace(base, **changes)


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_imageless_contract() -> None:
    argv = qemu_argv(spec(memory_mib=2048, vcpus=4))
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-kernel") == ["/boot/vmlinuz-6.1.0-57-amd64"]
    assert option(argv, "-initrd") == ["/nix/store/abc-initrd/initrd"]
    assert option(argv, "-append") == [f"root=tmpfs console=ttyS0,115200 console=hvc0 init={INIT}"]
    assert option(argv, "-m") == ["2048"] and option(argv, "-smp") == ["4"]
    assert option(argv, "-machine") == ["q35,memory-backend=mem"]
    assert "memory-backend-memfd,id=mem,size=2048M,share=on" in option(argv, "-object")
    devices = option(argv, "-device")
    assert "vhost-user-fs-pci,queue-size=1024,chardev=vfs0,tag=store" in devices
    assert "vhost-user-fs-pci,queue-size=1024,chardev=vfs1,tag=modules" in devices
    chardevs = option(argv, "-chardev")
    assert f"socket,id=vfs0,path={RUN.path}/virtiofsd-store.sock" in chardevs
    assert f"socket,id=vfs1,path={RUN.path}/virtiofsd-modules.sock" in chardevs
    assert "virtio-rng-pci-non-transitional" in devices
    assert "virtio-serial-pci-non-transitional,id=vser0" in devices
    assert "virtconsole,bus=vser0.0,chardev=console0" in devices
    assert option(argv, "-nic") == ["user,model=virtio-net-pci-non-transitional"]
    assert "-nodefaults" in argv and "-S" not in argv and "-no-reboot" not in argv


def test_consoles_log_every_byte_and_qmp_socket() -> None:
    chardevs = option(qemu_argv(spec()), "-chardev")
    assert (f"socket,id=serial0,path={RUN.serial_socket},server=on,wait=off,logfile={RUN.serial_log}"
            in chardevs)
    assert (f"socket,id=console0,path={RUN.console_socket},server=on,wait=off,logfile={RUN.console_log}"
            in chardevs)
    assert f"socket,id=qmp,path={RUN.qmp_socket},server=on,wait=off" in chardevs
    argv = qemu_argv(spec())
    assert option(argv, "-serial") == ["chardev:serial0"]
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]


def test_accelerators() -> None:
    kvm = qemu_argv(spec(accel="kvm"))
    assert option(kvm, "-accel") == ["kvm"] and option(kvm, "-cpu") == ["host"]
    tcg = qemu_argv(spec())
    assert option(tcg, "-accel") == ["tcg"] and option(tcg, "-cpu") == ["max"]
    with pytest.raises(SpecError, match="accelerator"):
        qemu_argv(spec(accel="xen"))  # type: ignore[arg-type]


def test_disks_shares_nic_and_flags() -> None:
    argv = qemu_argv(spec(
        disks=(Disk(Path("/var/lib/kdevweb/disks/g1-scratch.qcow2"), serial="scratch0"),
               Disk(Path("/var/lib/kdevweb/disks/g1-test.raw"), serial="test0", format="raw", read_only=True)),
        shares=(Share("src", RUN.virtiofsd_socket("src")),),
        ssh_port=40022, name="fstests-1", paused=True, no_reboot=True,
    ))
    assert option(argv, "-blockdev") == [
        "driver=qcow2,node-name=disk0,read-only=off,file.driver=file,"
        "file.filename=/var/lib/kdevweb/disks/g1-scratch.qcow2",
        "driver=raw,node-name=disk1,read-only=on,file.driver=file,file.filename=/var/lib/kdevweb/disks/g1-test.raw",
    ]
    devices = option(argv, "-device")
    assert "virtio-blk-pci-non-transitional,id=vdisk0,drive=disk0,serial=scratch0" in devices
    assert "virtio-blk-pci-non-transitional,id=vdisk1,drive=disk1,serial=test0" in devices
    assert "vhost-user-fs-pci,queue-size=1024,chardev=vfs2,tag=src" in devices
    assert f"socket,id=vfs2,path={RUN.path}/virtiofsd-src.sock" in option(argv, "-chardev")
    assert option(argv, "-nic") == ["user,model=virtio-net-pci-non-transitional,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert option(argv, "-name") == ["guest=fstests-1"]
    assert "-S" in argv and "-no-reboot" in argv


def test_commas_in_paths_cannot_add_options() -> None:
    sneaky = Path("/home/dev/disk.qcow2,file.locking=off")
    argv = qemu_argv(spec(disks=(Disk(sneaky, serial="d0"),), run_dir=RunDir(Path("/tmp/a,b"))))
    assert "file.filename=/home/dev/disk.qcow2,,file.locking=off" in option(argv, "-blockdev")[0]
    assert "path=/tmp/a,,b/qmp.sock,server=on" in option(argv, "-chardev")[0]


def test_boot_params_and_extra_cmdline_order() -> None:
    line = kernel_cmdline(spec(boot_params=("root=tmpfs", "loglevel=4"), extra_cmdline="  quiet   xfs.debug=1 "))
    assert line == f"root=tmpfs console=ttyS0,115200 console=hvc0 init={INIT} loglevel=4 quiet xfs.debug=1"


@pytest.mark.parametrize("extra", ["a\nb", "a\rb", "a\0b", "a\tb", "x\x1bb", "\x7f"])
def test_cmdline_control_characters_refused(extra: str) -> None:
    with pytest.raises(KernelCommandLineError, match="one line without control characters"):
        qemu_argv(spec(extra_cmdline=extra))


def test_cmdline_length_cap() -> None:
    base = len(kernel_cmdline(spec()))
    fits = "x" * (MAX_CMDLINE - base - 1)
    assert len(kernel_cmdline(spec(extra_cmdline=fits))) == MAX_CMDLINE
    with pytest.raises(KernelCommandLineError, match="limit of 2047"):
        kernel_cmdline(spec(extra_cmdline=fits + "y"))
    with pytest.raises(KernelCommandLineError, match="limit"):
        kernel_cmdline(spec(extra_cmdline="y" * 5000))
    assert issubclass(KernelCommandLineError, SpecError) and issubclass(SpecError, ValueError)


@pytest.mark.parametrize("changes, message", [
    ({"memory_mib": 64}, "memory"),
    ({"vcpus": 0}, "vCPUs"),
    ({"vcpus": 1000}, "vCPUs"),
    ({"ssh_port": 0}, "SSH port"),
    ({"ssh_port": 70000}, "SSH port"),
    ({"name": "a b"}, "guest name"),
    ({"name": "x" * 64}, "guest name"),
    ({"init": "init"}, "init from boot.json"),
    ({"init": "/nix/store/x/init quiet"}, "init from boot.json"),
    ({"kernel": Path("vmlinuz")}, "kernel must be an absolute path"),
    ({"initrd": Path("/nix/store/x\n/initrd")}, "control character"),
    ({"shares": (Share("store", RUN.virtiofsd_socket("x")),)}, "reserved"),
    ({"shares": (Share("a,b", RUN.virtiofsd_socket("x")),)}, "share tag"),
    ({"shares": (Share("t" * 37, RUN.virtiofsd_socket("x")),)}, "share tag"),
    ({"shares": (Share("t", RUN.virtiofsd_socket("a")), Share("t", RUN.virtiofsd_socket("b")))}, "unique"),
    ({"disks": (Disk(Path("/d"), serial="s" * 21),)}, "disk serial"),
    ({"disks": (Disk(Path("/d"), serial="a,drive=x"),)}, "disk serial"),
    ({"disks": (Disk(Path("/d"), serial="s"), Disk(Path("/e"), serial="s"))}, "unique"),
    ({"disks": (Disk(Path("relative.qcow2"), serial="s"),)}, "disk must be an absolute path"),
    ({"run_dir": RunDir(Path("/tmp/" + "r" * 100))}, "longer than a unix socket path"),
    ({"boot_params": ("a\nb",)}, "boot.json kernelParams"),
])
def test_invalid_specs_refused(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        qemu_argv(spec(**changes))


def test_runtime_package_is_django_free() -> None:
    """Every module under guests/runtime imports only the stdlib, itself and
    the clients of what it drives (Redis for consoles, libvirt): no Django."""
    for path in Path(qemu_mod.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in {"guests", "__future__", "redis", "libvirt"} or top in _stdlib(), \
                    f"{path.name} imports {name}"
                if top == "guests":
                    assert name.startswith("guests.runtime"), f"{path.name} imports {name}"


def _stdlib() -> frozenset[str]:
    import sys
    return frozenset(sys.stdlib_module_names)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_qemu_accepts_the_devices(tmp_path: Path) -> None:
    """QEMU 7.2 knows every device and option used (it parses them before
    noticing that the kernel does not exist)."""
    argv = qemu_argv(spec(run_dir=RunDir(tmp_path), ssh_port=40022, name="g",
                          disks=(Disk(tmp_path / "d.qcow2", serial="d0"),),
                          shares=(Share("src", tmp_path / "src.sock"),)))
    for flag in ("-device", "-nic"):
        for value in option(argv, flag):
            model = value.split(",")[0] if flag == "-device" else value.split("model=")[1].split(",")[0]
            out = subprocess.run(["qemu-system-x86_64", "-device", f"{model},help"], capture_output=True,
                                 text=True, timeout=30)
            assert out.returncode == 0, f"{model}: {out.stderr}"
