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
