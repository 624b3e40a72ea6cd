"""Long-lived helper processes (QEMU, virtiofsd) owned by their starter.

RQ kills a job's whole process group on timeout or stop, and a worker can
be killed at any time. A guest must survive both, so every process here is
started in a session of its own (``start_new_session``): no group signal
aimed at its starter reaches it, and no controlling terminal hangs it up.
There is deliberately no parent-death signal either: when the host agent
dies, its guests keep running and a restarted agent re-adopts them from
the pid file.

A pid file holds ``<pid> <start time>``; the start time (from
``/proc/<pid>/stat``) tells a re-adopted process from an unrelated one
that later got the same pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """A process identity that survives pid reuse."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        """Running (not a zombie) and still the same process."""
        stat = _stat(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and stat[1] == self.start_time

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if this is still the recorded process; False if it is gone."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


def open_pidfd(record: ProcessRecord) -> int | None:
    """A pidfd for ``record`` (readable once the process ends), or None if it is gone.

    Works for processes that are not our children, i.e. adopted ones: an
    owner waits on these with select/poll/asyncio and learns of an exit at
    once instead of polling /proc. Checked after opening, so a pid reused
    in between is not mistaken for the recorded process.
    """
    try:
        fd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return None
    if not record.alive():
        os.close(fd)
        return None
    return fd


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            # The command name may contain spaces and ')': fields follow the last ')'.
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])  # field 3 (state) and field 22 (starttime)


def record_of(pid: int) -> ProcessRecord:
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return ProcessRecord(pid, stat[1])


def write_pid_file(path: Path, record: ProcessRecord) -> None:
    """Atomically (rename), so a reader never sees half a line."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{record.pid} {record.start_time}\n", encoding="ascii")
    os.replace(tmp, path)


def read_pid_file(path: Path) -> ProcessRecord | None:
    """The recorded process, or None if there is no (well-formed) pid file."""
    try:
        pid, start = path.read_text(encoding="ascii").split()
        return ProcessRecord(int(pid), int(start))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def spawn(
    argv: Sequence[str],
    *,
    stderr_path: Path,
    pid_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session; stdout and stderr go to ``stderr_path``.

    The caller gets the Popen and must ``wait()``/``poll()`` it (it is the
    parent); the pid file lets a later owner adopt it with
    :func:`read_pid_file`. Output goes to a file rather than a pipe so the
    process never blocks on a full pipe when its owner is gone.
    """
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    if pid_path is not None:
        # Not reaped until the caller waits, so /proc/<pid> exists even if
        # the process already exited (a zombie).
        write_pid_file(pid_path, record_of(proc.pid))
    return proc


def wait_record_gone(record: ProcessRecord, timeout: float) -> bool:
    """Poll until a process that is not our child is gone; True if it is."""
    deadline = time.monotonic() + timeout
    while record.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def terminate_record(record: ProcessRecord, grace: float = 5.0) -> bool:
    """:func:`terminate` for an adopted process (no exit status: not our child)."""
    if not record.signal(signal.SIGTERM):
        return True
    if wait_record_gone(record, grace):
        return True
    record.signal(signal.SIGKILL)
    return wait_record_gone(record, 5.0)


def describe_exit(returncode: int) -> str:
    """``exited 1`` or ``killed by SIGKILL`` for a Popen returncode."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited {returncode}"
