"""guests.runtime.bootspec and .kernel: reading a build's boot.json, finding kernels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from guests.runtime.bootspec import BootSpecError, read_bootspec
from guests.runtime.kernel import debian_kernels, imageless_missing


def write_toplevel(root: Path, **changes: object) -> Path:
    top = root / "toplevel"
    top.mkdir()
    (top / "initrd").write_bytes(b"\x1f\x8b")
    (top / "init").write_text("#!/bin/sh\n")
    v1: dict[str, object] = {"system": "x86_64-linux", "kernel": f"{top}/kernel", "kernelParams": ["loglevel=4"],
                             "label": "NixOS 26.05", "initrd": f"{top}/initrd", "toplevel": str(top),
                             "init": f"{top}/init"}
    v1.update(changes)
    v1 = {k: v for k, v in v1.items() if v is not None}
    (top / "boot.json").write_text(json.dumps({"org.nixos.bootspec.v1": v1, "org.nixos.specialisation.v1": {}}))
    return top


def test_reads_init_initrd_and_params(tmp_path: Path) -> None:
    top = write_toplevel(tmp_path)
    boot = read_bootspec(top)
    assert boot.init == f"{top}/init" and boot.initrd == top / "initrd"
    assert boot.kernel_params == ("loglevel=4",) and boot.label == "NixOS 26.05" and boot.toplevel == str(top)
    assert read_bootspec(top / "boot.json") == boot


def test_missing_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BootSpecError, match="does not exist: the build output is gone"):
        read_bootspec(tmp_path / "gone")


def test_garbage_collected_initrd_or_init(tmp_path: Path) -> None:
    top = write_toplevel(tmp_path)
    (top / "initrd").unlink()
    with pytest.raises(BootSpecError, match=r"initrd .* is gone \(garbage-collected\?\)"):
        read_bootspec(top)
    assert read_bootspec(top, check_files=False).initrd == top / "initrd"


def test_unreadable_initrd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = write_toplevel(tmp_path)
    # chmod 0 does not stop root, who runs the test suite.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(top / "initrd") and real_access(path, mode))
    with pytest.raises(BootSpecError, match="not readable"):
        read_bootspec(top)


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "no org.nixos.bootspec.v1 object"),
    (b'{"org.nixos.bootspec.v1": "x"}', "no org.nixos.bootspec.v1 object"),
    (b'{"org.nixos.bootspec.v1": {}}', "kernelParams|init"),
    (b" " * (2 << 20), "larger than"),
])
def test_garbage_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "boot.json").write_bytes(content)
    with pytest.raises(BootSpecError, match=message):
        read_bootspec(tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"initrd": None}, "names no initrd"),
    ({"init": 3}, "init must be a non-empty string"),
    ({"init": "init"}, "init must be an absolute path"),
    ({"kernelParams": "quiet"}, "kernelParams must be a list of strings"),
    ({"kernelParams": [1]}, "kernelParams must be a list of strings"),
    ({"toplevel": ""}, "toplevel must be a non-empty string"),
])
def test_bad_fields(tmp_path: Path, changes: dict, message: str) -> None:
    top = write_toplevel(tmp_path, **changes)
    with pytest.raises(BootSpecError, match=message):
        read_bootspec(top)


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "boot.json").mkdir()
    with pytest.raises(BootSpecError, match="cannot be read"):
        read_bootspec(tmp_path)


def fake_kernel(root: Path, version: str, *, builtin: list[str], modules: list[str]) -> Path:
    (root / "boot").mkdir(exist_ok=True)
    (root / "boot" / f"vmlinuz-{version}").write_bytes(b"MZ")
    mods = root / "lib" / "modules" / version
    mods.mkdir(parents=True)
    (mods / "modules.builtin").write_text("".join(f"{m}\n" for m in builtin))
    (mods / "modules.dep").write_text("".join(f"{m}:\n" for m in modules))
    return mods


def test_finds_debian_kernels_with_modules(tmp_path: Path) -> None:
    fake_kernel(tmp_path, "6.1.0-1-amd64", builtin=[], modules=[])
    fake_kernel(tmp_path, "6.1.0-2-amd64", builtin=[], modules=[])
    (tmp_path / "boot" / "vmlinuz-6.1.0-3-amd64").write_bytes(b"MZ")  # no modules: skipped
    found = debian_kernels(tmp_path / "boot", tmp_path / "lib" / "modules")
    assert [k.version for k in found] == ["6.1.0-1-amd64", "6.1.0-2-amd64"]
    assert found[-1].modules_dir == tmp_path / "lib" / "modules" / "6.1.0-2-amd64"


def test_what_an_imageless_guest_needs_built_in(tmp_path: Path) -> None:
    debian = fake_kernel(tmp_path, "6.1.0-1-amd64", builtin=["kernel/fs/ext4/ext4.ko"], modules=[
        "kernel/fs/fuse/virtiofs.ko.xz", "kernel/fs/fuse/fuse.ko.xz", "kernel/drivers/virtio/virtio_pci.ko.xz",
        "kernel/drivers/char/virtio_console.ko.xz"])
    missing = imageless_missing(debian)
    assert missing == {"VIRTIO_PCI": "module", "VIRTIO_FS": "module", "FUSE_FS": "module",
                       "VIRTIO_CONSOLE": "module", "TMPFS": "unknown"}
    config = tmp_path / "config"
    config.write_text("CONFIG_TMPFS=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_FS=m\n# CONFIG_VIRTIO_CONSOLE is not set\n")
    assert imageless_missing(debian, config) == {"VIRTIO_FS": "module", "FUSE_FS": "module",
                                                 "VIRTIO_CONSOLE": "missing"}
    custom = fake_kernel(tmp_path, "6.12.0-dev", builtin=[
        "kernel/fs/fuse/virtiofs.ko", "kernel/fs/fuse/fuse.ko", "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/char/virtio_console.ko"], modules=[])
    config.write_text("CONFIG_TMPFS=y\n")
    assert imageless_missing(custom, config) == {}


def test_debians_stock_kernel_cannot_boot_a_real_imageless_guest() -> None:
    kernels = debian_kernels()
    if not kernels:
        pytest.skip("no Debian kernel installed")
    kernel = kernels[-1]
    missing = imageless_missing(kernel.modules_dir, Path(f"/boot/config-{kernel.version}"))
    assert missing.get("VIRTIO_FS") == "module"  # why the stand-in's initrd loads modules
