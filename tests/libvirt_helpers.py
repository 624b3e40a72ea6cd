"""A real libvirtd for tests (started like Redis when none answers)."""

from __future__ import annotations

import shutil
import subprocess
import time

URI = "qemu:///system"


def libvirtd_answers(uri: str = URI) -> bool:
    proc = subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, timeout=20)
    return proc.returncode == 0


def ensure_libvirtd(uri: str = URI, *, timeout: float = 20.0) -> str | None:
    """Start virtlogd and libvirtd (daemonised, -d) where they are not running.

    Returns None when libvirtd answers, else why it cannot be had.
    """
    for tool in ("virsh", "libvirtd", "virtlogd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: libvirt-daemon-system, libvirt-clients)"
    if libvirtd_answers(uri):
        return None
    if subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode != 0:
        subprocess.run(["virtlogd", "-d"], check=False, timeout=20)
    if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0:
        subprocess.run(["libvirtd", "-d"], check=False, timeout=20)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if libvirtd_answers(uri):
            return None
        time.sleep(0.3)
    return f"libvirtd at {uri} does not answer"


def libvirtd_pid() -> int | None:
    proc = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True)
    pids = [int(p) for p in proc.stdout.split()]
    return pids[0] if len(pids) == 1 else None
