"""The stand-in's libvirt image (make-disk-image.nix) boots from its own disk.

Builds a rendered libvirt-backend guest's ``image`` with the real nix (in the
sandbox, through the daemon), checks the qcow2 holds an MBR with syslinux's
boot code, a bootable FAT partition with syslinux, kernel and initrd, and an
ext4 root, then boots it with QEMU alone (TCG, no -kernel: SYSLINUX from the
disk), sees the banner on the serial line and the NIC's DHCP lease, writes a
file, reboots the guest and reads the file back. About 40 s under TCG.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from guests.flake import render_files, write_files
from tests.helpers import sample_settings, skip_or_fail
from tests.test_standin_boot import Console

NIX = shutil.which("nix")
QEMU = shutil.which("qemu-system-x86_64")


def build_image(tmp: Path, disk_mib: int = 96, *, extra: str = "") -> Path:
    """Build a libvirt image of a fresh guest; returns the output directory."""
    d = tmp / "flake"
    d.mkdir(parents=True, exist_ok=True)
    settings = sample_settings(backend="libvirt", hostName="lvimg", diskSizeMiB=disk_mib)
    write_files(render_files(settings, extra_module=extra, title="image test"), str(d))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp),
           "NIX_CONFIG": "substituters =\nexperimental-features = nix-command flakes\n"}
    proc = subprocess.run([NIX or "nix", "build", f"path:{d}#image", "--no-link", "--json", "-L"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Path(json.loads(proc.stdout)[0]["outputs"]["out"])


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if NIX is None or QEMU is None:
        skip_or_fail("nix and qemu-system-x86_64 are needed")
    return build_image(tmp_path_factory.mktemp("img"))


def raw_copy(image: Path, tmp: Path) -> bytes:
    raw = tmp / f"disk-{uuid.uuid4().hex[:6]}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image / "nixos.qcow2"), str(raw)], check=True)
    return raw.read_bytes()


def test_image_has_partition_table_and_bootloader(image: Path, tmp_path: Path) -> None:
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image / "nixos.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 96 * 1024 * 1024  # diskSize honoured
    disk = raw_copy(image, tmp_path)
    assert disk[510:512] == b"\x55\xaa"  # MBR signature
    mbr_bin = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    assert disk[:440] == mbr_bin[:440]  # syslinux's MBR boot code
    entries = [disk[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    root, boot = entries[0], entries[1]
    assert root[4] == 0x83 and root[0] == 0  # vda1: Linux, not active
    assert boot[4] == 0x0C and boot[0] == 0x80  # vda2: FAT32 LBA, active
    boot_start = int.from_bytes(boot[8:12], "little") * 512
    root_start = int.from_bytes(root[8:12], "little") * 512
    assert boot_start == 1024 * 1024
    assert disk[root_start + 1080: root_start + 1082] == b"\x53\xef"  # ext superblock magic
    (tmp_path / "boot.img").write_bytes(disk[boot_start:root_start])
    listing = subprocess.run(["mdir", "-a", "-b", "-i", str(tmp_path / "boot.img"), "::/"],
                             capture_output=True, text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    names = {line.strip().lstrip(":/").lower() for line in listing.stdout.splitlines()}
    assert {"ldlinux.sys", "ldlinux.c32", "syslinux.cfg", "bzimage", "initrd"} <= names, listing.stdout
    cfg = subprocess.run(["mtype", "-i", str(tmp_path / "boot.img"), "::/syslinux.cfg"], capture_output=True,
                         text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert "root=/dev/vda1" in cfg and f"init={(image / 'toplevel').resolve()}/init" in cfg


@pytest.mark.slow
def test_qemu_alone_boots_it_and_a_file_survives_a_reboot(image: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image / "nixos.qcow2"),
                    str(overlay)], check=True)
    serial = tmp_path / "serial.sock"  # wait=on: QEMU starts once the test listens, no byte lost
    qemu = subprocess.Popen([QEMU or "qemu-system-x86_64", "-accel", "tcg", "-m", "384", "-smp", "1",
                             "-display", "none", "-monitor", "none",
                             "-drive", f"file={overlay},if=virtio,format=qcow2",
                             "-nic", "user,model=virtio-net-pci",
                             "-serial", f"unix:{serial},server=on,wait=on"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if serial.exists():
                break
            assert qemu.poll() is None, qemu.stderr.read() if qemu.stderr else ""
            time.sleep(0.1)
        console = Console(serial)
        console.expect(r"SYSLINUX", 60)
        console.expect(r"EXT4-fs \(vda1\): mounted", 60)
        console.expect(r"eth0 has 10\.0\.2\.15", 60)
        console.expect(r"lvimg ready \(user", 60)
        token = uuid.uuid4().hex
        console.send(f"echo {token} > /root/persist; sync; echo wrote-$((40+2))")
        console.expect(r"wrote-42", 20)
        console.send("reboot -f")
        console.expect(r"SYSLINUX", 60)
        console.expect(r"lvimg ready \(user", 90)
        console.send("cat /root/persist; echo read-$((40+2))")
        console.expect(token + r"\s+read-42", 20)
        console.close()
    finally:
        qemu.kill()
        qemu.wait(10)
