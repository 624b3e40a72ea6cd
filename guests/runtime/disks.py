"""Per-guest scratch disks, created with ``qemu-img`` (qcow2 by default).

A disk holds a user's test data across restarts and rollbacks, so creating
one never overwrites an existing file; deleting is the caller's explicit
act. qcow2 files grow on demand: a 100 GiB scratch disk for fstests costs
only what the guest writes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

QEMU_IMG = "qemu-img"
DiskFormat = Literal["qcow2", "raw"]
MAX_DISK_MIB = 16 * 1024 * 1024  # 16 TiB


class DiskError(RuntimeError):
    """A disk could not be created or inspected; the message says why."""


@dataclass(frozen=True)
class DiskInfo:
    format: str
    virtual_mib: int
    actual_bytes: int


def create_argv(path: Path, size_mib: int, fmt: DiskFormat = "qcow2", *, qemu_img: str = QEMU_IMG) -> list[str]:
    if fmt not in ("qcow2", "raw"):
        raise DiskError(f"disk format must be qcow2 or raw, got {fmt!r}")
    if not 1 <= size_mib <= MAX_DISK_MIB:
        raise DiskError(f"disk size must be between 1 MiB and {MAX_DISK_MIB} MiB, got {size_mib}")
    if not path.is_absolute():
        raise DiskError(f"disk path must be absolute, got {str(path)!r}")
    return [qemu_img, "create", "-q", "-f", fmt, str(path), f"{size_mib}M"]


def create_disk(path: Path, size_mib: int, fmt: DiskFormat = "qcow2", *, qemu_img: str = QEMU_IMG) -> None:
    """Create an empty disk at ``path``; DiskError if it exists or qemu-img fails."""
    argv = create_argv(path, size_mib, fmt, qemu_img=qemu_img)
    if path.exists() or path.is_symlink():
        raise DiskError(f"{path} already exists; a disk is never overwritten")
    if not path.parent.is_dir():
        raise DiskError(f"{path.parent} is not a directory")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"cannot run {qemu_img}: {exc}") from None
    if done.returncode != 0:
        raise DiskError(f"qemu-img could not create {path}: {done.stderr.strip()[-500:]}")


def disk_info(path: Path, *, qemu_img: str = QEMU_IMG) -> DiskInfo:
    """Format and sizes of a disk, also while a running guest holds it."""
    # -U (force-share): QEMU holds a write lock on a disk in use; reading
    # metadata alongside is safe and the page wants it for running guests.
    argv = [qemu_img, "info", "-U", "--output=json", str(path)]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"cannot run {qemu_img}: {exc}") from None
    if done.returncode != 0:
        raise DiskError(f"qemu-img cannot read {path}: {done.stderr.strip()[-500:]}")
    try:
        info = json.loads(done.stdout)
        return DiskInfo(format=str(info["format"]), virtual_mib=int(info["virtual-size"]) // (1024 * 1024),
                        actual_bytes=int(info.get("actual-size", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise DiskError(f"qemu-img info printed something unexpected for {path}: {exc}") from None
