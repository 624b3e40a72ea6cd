"""Deleting a deleted guest's transcripts without racing its console relay.

The relay is the only writer of a console's transcript directory and keeps
writing until the relay pool stops it (the pool's next sync after the
guest row is gone: ends the boot, gzips it, rewrites ``boots.json``).
Removing the directory before that would let the relay recreate parts of
it. So the host agent, asked to delete a guest's transcripts, only leaves
a marker in the guest's transcript directory
(``<run dir>/transcripts/guest-<id>/``), and whoever knows that no relay
of the guest runs removes it:

* the relay pool, right after it stopped the relay of a console whose
  guest is gone (:func:`remove_if_marked`, per console);
* ``manage.py consolerelay`` at its start, before any relay runs, for
  guests deleted while no relay process was up (:func:`sweep`).

Without the marker the transcripts stay (the default). Django-free; the
paths come from the Host row's run dir, never from a request.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

MARKER = "DELETE"
_GUEST_DIR = re.compile(r"guest-([0-9]+)")


def mark_for_removal(guest_dir: Path) -> None:
    """Ask for ``guest_dir`` (``…/transcripts/guest-<id>``) to be removed
    once the guest's relays stopped."""
    guest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (guest_dir / MARKER).write_text("the guest was deleted with its transcripts\n")


def _marked(guest_dir: Path) -> bool:
    marker = guest_dir / MARKER
    return _GUEST_DIR.fullmatch(guest_dir.name) is not None and marker.is_file() and not marker.is_symlink()


def remove_if_marked(console_dir: Path) -> bool:
    """After the relay of ``console_dir`` (``…/guest-<id>/<console>``)
    stopped: remove it if its guest was deleted with its transcripts, and
    the guest's directory once nothing but the marker is left in it."""
    guest_dir = console_dir.parent
    if not _marked(guest_dir):
        return False
    shutil.rmtree(console_dir, ignore_errors=True)
    if all(p.name == MARKER for p in guest_dir.iterdir()):
        shutil.rmtree(guest_dir, ignore_errors=True)
    return True


def sweep(root: Path, keep: set[int]) -> list[int]:
    """Remove every marked ``root/guest-<id>`` whose id is not in ``keep``
    (guests whose rows still exist: their relays will run and the pool
    removes them when the rows go). Only where no relay of those guests runs."""
    removed: list[int] = []
    try:
        children = list(root.iterdir())
    except OSError:
        return removed
    for guest_dir in children:
        match = _GUEST_DIR.fullmatch(guest_dir.name)
        if (match and int(match.group(1)) not in keep and not guest_dir.is_symlink()
                and guest_dir.is_dir() and _marked(guest_dir)):
            shutil.rmtree(guest_dir, ignore_errors=True)
            removed.append(int(match.group(1)))
    return sorted(removed)
