"""What a guest keeps on its host, for its page and its delete confirmation:
its disks where they really are (QEMU guests under the host's run dir,
libvirt guests beside their root disk overlays in libvirt's image tree)
and its console transcripts (boots and bytes).

Read-only. The web tier runs unprivileged and the host agent's run dirs are
root's, so a file's size on disk is shown only where it can be seen; the
rest says "unknown". Where the guest runs on another machine, only what
the database and Redis know is shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import libvirt_agent
from .console import CONSOLES, console_boots, transcript_dir
from .runtime import transcript
from .vm_models import Guest

_OVERLAY = re.compile(r"build-([0-9]+)\.qcow2")


def _on_disk(path: Path) -> int | None:
    """Bytes the file takes (allocated), or None where it cannot be seen."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return None


def _overlay_builds(guest: Guest) -> list[int]:
    """Builds a libvirt guest has a root overlay for: its timeline says when
    the agent created one (the directory itself is not listable by the web
    tier), the directory where it is."""
    builds: set[int] = set()
    for text in guest.events.filter(kind="disk", source="agent").values_list("text", flat=True):
        builds.update(int(m) for m in _OVERLAY.findall(text))
    for name in libvirt_agent.overlays_of(guest):
        match = _OVERLAY.fullmatch(name)
        if match:
            builds.add(int(match.group(1)))
    return sorted(builds)


def guest_disks(guest: Guest) -> list[dict[str, Any]]:
    """One row per disk file: for libvirt guests the root overlays first
    (always deleted with the guest), then the storage disks (deleted only
    when asked)."""
    rows: list[dict[str, Any]] = []
    libvirt = libvirt_agent.is_libvirt(guest)
    if libvirt:
        d = libvirt_agent.guest_dir(guest.host.name, guest.pk)
        for build_id in _overlay_builds(guest):
            path = d / f"build-{build_id}.qcow2"
            rows.append({"kind": "root", "mount_point": "/", "device": "", "serial": "",
                         "size_mib": None, "path": str(path), "on_disk": _on_disk(path),
                         "note": f"root disk overlay for build #{build_id}"
                                 + (" (current)" if build_id == guest.build_id else "")})
    for disk in guest.disks.all():
        path = libvirt_agent.disk_path(guest, disk.serial) if libvirt else Path(disk.path)
        rows.append({"kind": "storage", "mount_point": disk.mount_point, "device": disk.device,
                     "serial": disk.serial, "size_mib": disk.size_mib, "path": str(path),
                     "on_disk": _on_disk(path), "note": ""})
    return rows


def guest_transcripts(guest: Guest) -> list[dict[str, Any]]:
    """Per console: its transcript directory, and its boots and bytes as the
    relay last published them (Redis), else as its directory shows them,
    else unknown (None)."""
    out = []
    for console in CONSOLES:
        directory = transcript_dir(guest.host, guest.pk, console)
        boots: int | None = None
        size: int | None = None
        published = console_boots(guest, console)
        if published:
            boots = len(published)
            size = sum((b["end"] if b.get("end") is not None else b["start"]) - b["start"] for b in published)
        else:
            try:
                on_disk = transcript.boots(directory)
                boots, size = len(on_disk), sum((b.end or b.start) - b.start for b in on_disk)
            except (OSError, transcript.TranscriptError):
                pass
        out.append({"console": console, "path": str(directory), "boots": boots, "bytes": size})
    return out


def guest_delete_overview(guest: Guest) -> dict[str, Any]:
    """Everything the delete confirmation page shows."""
    disks = guest_disks(guest)
    return {
        "root_disks": [d for d in disks if d["kind"] == "root"],
        "storage_disks": [d for d in disks if d["kind"] == "storage"],
        "transcripts": guest_transcripts(guest),
        "run_dir": str(guest.host.guest_run_dir(guest.pk)),
        "libvirt_domain": libvirt_agent.domain_name(guest) if libvirt_agent.is_libvirt(guest) else "",
    }
