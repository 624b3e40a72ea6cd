"""Debian 12's C virtiofsd (``/usr/lib/qemu/virtiofsd``, QEMU 7.2): argv and owner.

That virtiofsd differs from upstream's Rust one: ``-o source=DIR`` instead
of ``--shared-dir``, no ``--readonly``. Read-only shares are therefore made
read-only underneath it (see :mod:`._ro_exec`): ``unshare`` gives it a
private mount namespace in which its directory is a read-only bind mount.
It must run as root for its namespace sandbox (``-o sandbox=chroot`` is
the fallback inside containers without namespaces). One instance serves
one QEMU connection and exits when QEMU disconnects.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from guests.runtime import process

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
RO_EXEC = str(Path(__file__).with_name("_ro_exec.py"))
Cache = Literal["auto", "always", "none"]
Sandbox = Literal["namespace", "chroot"]


class VirtiofsdError(RuntimeError):
    """virtiofsd did not come up; the message carries its own words."""


def virtiofsd_argv(
    *,
    socket_path: Path,
    source: Path,
    read_only: bool = False,
    cache: Cache = "auto",
    sandbox: Sandbox = "namespace",
    binary: str = VIRTIOFSD,
    python: str = sys.executable,
) -> list[str]:
    """argv serving ``source`` on the vhost-user socket ``socket_path``.

    ``cache=auto`` (the default, as upstream) lets the guest cache for a
    second; ``none`` when host and guest both write the tree at once.
    """
    if cache not in ("auto", "always", "none"):
        raise ValueError(f"virtiofsd cache mode must be auto, always or none, got {cache!r}")
    if sandbox not in ("namespace", "chroot"):
        raise ValueError(f"virtiofsd sandbox must be namespace or chroot, got {sandbox!r}")
    for what, path in (("socket", socket_path), ("source", source)):
        if not path.is_absolute() or any(ch in str(path) for ch in "\0\n"):
            raise ValueError(f"virtiofsd {what} must be an absolute path, got {str(path)!r}")
    # -o takes comma-separated options: a comma in the directory would add
    # options of the directory owner's choosing.
    if "," in str(source):
        raise ValueError(f"virtiofsd cannot share a directory whose path contains a comma: {str(source)!r}")
    argv = [binary, f"--socket-path={socket_path}", "-o", f"source={source}", "-o", f"cache={cache}",
            "-o", f"sandbox={sandbox}"]
    if read_only:
        # -I -S: the wrapper needs only the stdlib; skipping site and the
        # environment halves Python's start-up, which delays the guest's.
        argv = ["unshare", "--mount", "--propagation", "private", "--", python, "-I", "-S", RO_EXEC, str(source),
                "--", *argv]
    return argv


@dataclass
class Virtiofsd:
    """One virtiofsd process, started in its own session with a pid file."""

    tag: str
    source: Path
    socket_path: Path
    stderr_path: Path
    pid_path: Path | None = None
    read_only: bool = False
    cache: Cache = "auto"
    sandbox: Sandbox = "namespace"
    binary: str = VIRTIOFSD
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def argv(self) -> list[str]:
        return virtiofsd_argv(socket_path=self.socket_path, source=self.source, read_only=self.read_only,
                              cache=self.cache, sandbox=self.sandbox, binary=self.binary)

    def start(self, timeout: float = 10.0) -> None:
        """Start and return once its socket exists (QEMU may connect then)."""
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process; :meth:`wait_ready` waits for its socket. Split
        so that a guest's instances can start side by side."""
        if not self.source.is_dir():
            raise VirtiofsdError(f"share {self.tag!r}: {self.source} is not a directory")
        argv = self.argv()
        # A socket left by a crashed run would make wait_ready succeed
        # before this virtiofsd listens.
        self.socket_path.unlink(missing_ok=True)
        try:
            self.proc = process.spawn(argv, stderr_path=self.stderr_path, pid_path=self.pid_path)
        except OSError as exc:
            raise VirtiofsdError(f"cannot run virtiofsd for {self.tag!r}: {exc.strerror}") from None

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait for the socket. Existence is all that can be checked:
        virtiofsd serves exactly one connection, so a test connection
        would use it up."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            code = self.proc.poll()
            if code is not None:
                raise VirtiofsdError(f"virtiofsd for {self.tag!r} {process.describe_exit(code)} before "
                                     f"listening: {self._stderr_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise VirtiofsdError(f"virtiofsd for {self.tag!r} did not create {self.socket_path} "
                                     f"within {timeout:g} s: {self._stderr_tail()}")
            time.sleep(0.005)

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop it (if started) and remove its socket and pid file; its exit status."""
        code = None if self.proc is None else process.terminate(self.proc, grace)
        self.socket_path.unlink(missing_ok=True)
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)
        return code

    def _stderr_tail(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return text.strip()[-1000:] or "(no output)"
