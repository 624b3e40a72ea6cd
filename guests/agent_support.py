"""Small helpers of the host agent: ports, log tails, SQLite file owners."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail_lines(path: Path, lines: int = 40, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.replace("\r", "").splitlines()[-lines:])


def keep_sqlite_owned() -> None:
    """The agent runs as root but SQLite's -wal/-shm files must stay the
    service user's: if root created them, the web tier could no longer write."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "sqlite" not in str(db["ENGINE"]) or os.geteuid() != 0:
        return
    try:
        owner = os.stat(str(db["NAME"]))
    except OSError:
        return
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            st = os.stat(f"{db['NAME']}{suffix}")
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(f"{db['NAME']}{suffix}", owner.st_uid, owner.st_gid)
        except OSError:
            pass
