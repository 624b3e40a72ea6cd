"""Host directories a user may share into a guest: only under the host's roots.

A share path is typed by a user, so it is checked the way an attacker
would try to get around it: relative parts, ``..``, symlinks pointing out
of a root, a root given as a prefix string (``/srv/shares`` must not allow
``/srv/shares-other``), control characters and commas (which the C
virtiofsd's ``-o source=`` cannot take).

Check again right before starting the share's virtiofsd, with the
result passed on: someone who can write inside a root could swap a
directory for a symlink between a check at creation and the start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class ShareError(ValueError):
    """The directory may not be shared; the message says why."""


def resolve_share(path: str, roots: Iterable[str | os.PathLike[str]]) -> Path:
    """The real directory ``path`` names, if it is inside one of ``roots``."""
    if not path or any(ord(ch) < 0x20 or ch == "\x7f" for ch in path):
        raise ShareError("a share path must be a non-empty line without control characters")
    if not os.path.isabs(path):
        raise ShareError(f"a share path must be absolute, got {path!r}")
    real = Path(os.path.realpath(path))
    allowed = [Path(os.path.realpath(root)) for root in roots]
    if not allowed:
        raise ShareError("this host allows no share directories")
    if not any(real == root or root in real.parents for root in allowed):
        listed = ", ".join(str(root) for root in allowed)
        raise ShareError(f"{path} is not under an allowed share root ({listed})")
    if "," in str(real):
        raise ShareError(f"{real}: virtiofsd cannot share a path containing a comma")
    try:
        is_dir = real.is_dir()
    except OSError as exc:  # a directory on the way this user may not enter
        raise ShareError(f"{path} cannot be reached: {exc.strerror}") from None
    if not is_dir:
        raise ShareError(f"{path} is not an existing directory")
    return real
