"""External kernels for imageless guests: find Debian's, tell what is built in.

The real nixos-flake imageless initrd loads no modules, so the kernel must
have virtio-pci, virtiofs (with FUSE), the virtio console and tmpfs built
in. A kernel's ``modules.builtin`` lists what is built in; its ``.config``
(``/boot/config-<version>`` for Debian's) settles the rest (``TMPFS`` is a
bool option with no module to list).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

# Kconfig option -> the module file it produces when =m.
IMAGELESS_NEEDS = {
    "VIRTIO_PCI": "kernel/drivers/virtio/virtio_pci.ko",
    "VIRTIO_FS": "kernel/fs/fuse/virtiofs.ko",
    "FUSE_FS": "kernel/fs/fuse/fuse.ko",
    "VIRTIO_CONSOLE": "kernel/drivers/char/virtio_console.ko",
    "TMPFS": "",
}


@dataclass(frozen=True)
class KernelFiles:
    image: Path
    modules_dir: Path  # /lib/modules/<version>
    version: str


def debian_kernels(boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")) -> list[KernelFiles]:
    """Readable ``vmlinuz-*-amd64`` images that have a modules directory, oldest first."""
    found = []
    for path in glob.glob(str(boot / "vmlinuz-*-amd64")):
        version = Path(path).name[len("vmlinuz-"):]
        modules = modules_root / version
        if modules.is_dir() and os.access(path, os.R_OK):
            found.append(KernelFiles(Path(path), modules, version))
    return sorted(found, key=lambda k: k.image)


def _config(path: Path) -> dict[str, str]:
    values = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[len("# CONFIG_"):-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, value = line[len("CONFIG_"):].split("=", 1)
            values[key] = value
    return values


def imageless_missing(modules_dir: Path, config: Path | None = None) -> dict[str, str]:
    """Options a real nixos-flake imageless guest needs that this kernel
    does not have built in: ``{option: "module" | "missing" | "unknown"}``
    (empty: it can boot one)."""
    builtin = set()
    try:
        builtin = set((modules_dir / "modules.builtin").read_text(errors="replace").split())
    except OSError:
        pass
    try:
        dep = (modules_dir / "modules.dep").read_text(errors="replace")
        modules = {line.split(":", 1)[0] for line in dep.splitlines()}
    except OSError:
        modules = set()
    kconfig = _config(config) if config is not None else {}
    missing = {}
    for option, module in IMAGELESS_NEEDS.items():
        if option in kconfig:
            if kconfig[option] != "y":
                missing[option] = "module" if kconfig[option] == "m" else "missing"
        elif module and module in builtin:
            continue
        elif module and any(m.split(".ko")[0] == module[:-3] for m in modules):
            missing[option] = "module"
        else:
            missing[option] = "unknown"
    return missing


class KernelError(ValueError):
    """Not a usable kernel image or modules directory; the message says why."""


def image_version(image: Path) -> str | None:
    """The version a bzImage announces (its setup header's kernel_version
    string), or None for a vmlinux (ELF) or an image without one.
    Raises KernelError when ``image`` is neither a bzImage nor an ELF file."""
    try:
        with open(image, "rb") as fh:
            head = fh.read(0x10000)
    except IsADirectoryError:
        raise KernelError(f"{image} is a directory, not a kernel image") from None
    except FileNotFoundError:
        raise KernelError(f"{image} does not exist") from None
    except OSError as exc:
        raise KernelError(f"{image} cannot be read: {exc.strerror}") from None
    if head[:4] == b"\x7fELF":
        return None  # vmlinux: QEMU boots it through its PVH note
    # x86 boot protocol: "HdrS" at 0x202; the 16-bit pointer at 0x20E,
    # plus 0x200, is where the NUL-terminated version string starts.
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{image} is not a Linux kernel image (no bzImage header, not ELF)")
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    if offset >= len(head) or offset == 0x200:
        return None
    text = head[offset:offset + 200].split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split()[0] if text.split() else None


def check_kernel(image: Path, modules_dir: Path) -> str:
    """Validate a kernel a user names: its version (from the modules dir,
    checked against the image's own when it says one)."""
    try:
        return _check_kernel(image, modules_dir)
    except OSError as exc:  # e.g. a directory on the way that kdevweb may not enter
        raise KernelError(f"{exc.filename or image}: {exc.strerror}") from None


def _check_kernel(image: Path, modules_dir: Path) -> str:
    for what, path in (("kernel image", image), ("modules directory", modules_dir)):
        if not path.is_absolute():
            raise KernelError(f"the {what} must be an absolute path")
    if not image.is_file():
        raise KernelError(f"{image} is not a file" if image.exists() else f"{image} does not exist")
    if not os.access(image, os.R_OK):
        raise KernelError(f"{image} is not readable by kdevweb")
    announced = image_version(image)
    if not modules_dir.is_dir():
        raise KernelError(f"{modules_dir} is not a directory (run make modules_install INSTALL_MOD_PATH=…)")
    if not (modules_dir / "modules.dep").is_file():
        raise KernelError(f"{modules_dir} has no modules.dep: not a modules directory (…/lib/modules/<version>)")
    version = modules_dir.name
    if announced is not None and announced != version:
        # The guest mounts the parent on /lib/modules and looks for $(uname -r).
        raise KernelError(f"the image is version {announced} but the modules directory is named {version}; "
                          "the guest would not find its modules")
    return version
