"""Start one imageless guest: its virtiofsd instances, then QEMU.

The order matters: QEMU connects to each vhost-user socket at start-up and
exits if one is missing, so every virtiofsd must be listening first. If any
step fails, everything already started is stopped again, so a failed start
leaves no process behind and the error says which part failed and why.

The caller (the host agent) becomes the parent of every process; each runs
in a session of its own (see :mod:`.process`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guests.runtime import process
from guests.runtime.qemu import GuestSpec, RunDir, qemu_argv
from guests.runtime.qmp import QMPClient, QMPConnectionError, QMPTimeout
from guests.runtime.virtiofsd import VIRTIOFSD, Sandbox, Virtiofsd, VirtiofsdError

NIX_STORE = Path("/nix/store")


class LaunchError(RuntimeError):
    """The guest did not start; nothing it started is left running."""


class AdoptError(RuntimeError):
    """A guest's QEMU runs but cannot be taken over (e.g. another owner holds its QMP)."""


@dataclass(frozen=True)
class ShareSource:
    """The host directory behind a share tag of the spec."""

    path: Path
    read_only: bool = False


@dataclass
class RunningGuest:
    spec: GuestSpec
    qemu: subprocess.Popen[bytes]
    # QEMU takes one QMP client at a time: the owner of the guest holds it.
    qmp: QMPClient
    virtiofsds: list[Virtiofsd] = field(default_factory=list)

    def poll(self) -> int | None:
        return self.qemu.poll()

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM QEMU (SIGKILL after ``grace``), then its virtiofsd; QEMU's status."""
        self.qmp.close()
        code = process.terminate(self.qemu, grace)
        self.spec.run_dir.qemu_pid.unlink(missing_ok=True)
        for daemon in self.virtiofsds:
            daemon.stop(grace)
        return code


def _stderr_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[-2000:] or "(no output)"
    except OSError:
        return "(no output)"


def start_guest(
    spec: GuestSpec,
    *,
    modules_root: Path,
    shares: Mapping[str, ShareSource] | None = None,
    store: Path = NIX_STORE,
    virtiofsd: str = VIRTIOFSD,
    sandbox: Sandbox = "namespace",
    timeout: float = 10.0,
) -> RunningGuest:
    """Start ``spec``'s guest; return once QEMU answers on QMP (connected).

    ``modules_root`` is the directory that holds the kernel's
    ``<version>/`` modules directory (``/lib/modules`` for Debian's,
    ``$INSTALL_MOD_PATH/lib/modules`` for a developer's): the guest mounts
    it on ``/lib/modules`` and looks for ``$(uname -r)`` there.
    ``shares`` maps each tag of ``spec.shares`` to its host directory. The
    store and the modules are always read-only. Raises SpecError for a bad
    spec (before anything starts) and LaunchError if a process fails.
    """
    argv = qemu_argv(spec)  # validates the whole spec first
    shares = dict(shares or {})
    if set(shares) != {share.tag for share in spec.shares}:
        raise LaunchError(f"share directories given for {sorted(shares)}, "
                          f"the guest has {sorted(s.tag for s in spec.shares)}")
    run = spec.run_dir
    # Two starts of one guest (double click, two people, a retried job)
    # must not both get a QEMU: the second would also replace the first's
    # sockets. The caller's database lock is the main guard; this one
    # holds even when the database is wrong about the process.
    running = process.read_pid_file(run.qemu_pid)
    if running is not None and running.alive():
        raise LaunchError(f"this guest's QEMU is already running (pid {running.pid})")
    run.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = [("store", store, True, run.virtiofsd_socket("store")),
              ("modules", modules_root, True, run.virtiofsd_socket("modules"))]
    wanted += [(s.tag, shares[s.tag].path, shares[s.tag].read_only, s.socket) for s in spec.shares]
    started: list[Virtiofsd] = []
    try:
        for tag, source, read_only, sock in wanted:
            daemon = Virtiofsd(tag=tag, source=source, socket_path=sock, read_only=read_only,
                               stderr_path=run.virtiofsd_stderr(tag), pid_path=run.virtiofsd_pid(tag),
                               binary=virtiofsd, sandbox=sandbox)
            started.append(daemon)
            daemon.spawn()
        for daemon in started:  # side by side: the slowest sets the delay, not the sum
            daemon.wait_ready(timeout)
        run.qmp_socket.unlink(missing_ok=True)
        # A new file per QEMU rather than QEMU truncating the old one: the
        # console relay may still be reading the previous boot's tail from
        # it (guests/runtime/relay.py).
        run.serial_log.unlink(missing_ok=True)
        run.console_log.unlink(missing_ok=True)
        try:
            qemu = process.spawn(argv, stderr_path=run.qemu_stderr, pid_path=run.qemu_pid)
        except OSError as exc:
            raise LaunchError(f"cannot run {argv[0]}: {exc.strerror}") from None
        # The QMP socket exists before QEMU loads the kernel and initrd, so
        # its existence proves nothing; QEMU greets a QMP client only from
        # its main loop, i.e. once the machine is fully set up.
        try:
            qmp = QMPClient.connect(run.qmp_socket, timeout=timeout, alive=lambda: qemu.poll() is None)
        except (QMPConnectionError, QMPTimeout) as exc:
            try:
                code = qemu.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.terminate(qemu)
                raise LaunchError(f"QEMU did not answer on QMP ({exc}): {_stderr_tail(run.qemu_stderr)}") from None
            raise LaunchError(f"QEMU {process.describe_exit(code)} at start: {_stderr_tail(run.qemu_stderr)}") from None
    except (VirtiofsdError, LaunchError) as exc:
        for daemon in started:
            daemon.stop()
        run.qemu_pid.unlink(missing_ok=True)
        raise LaunchError(str(exc)) from None
    return RunningGuest(spec=spec, qemu=qemu, qmp=qmp, virtiofsds=started)


@dataclass
class AdoptedGuest:
    """A guest started by an earlier owner (e.g. a host agent that was killed).

    Not our children: no exit status, only whether they still run (pid and
    start time from the pid files).
    """

    run_dir: RunDir
    qemu: process.ProcessRecord
    qmp: QMPClient
    virtiofsds: dict[str, process.ProcessRecord] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.qemu.alive()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM QEMU (SIGKILL after ``grace``) and its virtiofsd; remove their pid files and sockets."""
        self.qmp.close()
        process.terminate_record(self.qemu, grace)
        self.run_dir.qemu_pid.unlink(missing_ok=True)
        for tag, record in self.virtiofsds.items():
            process.terminate_record(record, grace)
            self.run_dir.virtiofsd_pid(tag).unlink(missing_ok=True)
            self.run_dir.virtiofsd_socket(tag).unlink(missing_ok=True)


def adopt_guest(run_dir: RunDir, *, timeout: float = 5.0) -> AdoptedGuest | None:
    """Take over the guest whose files are in ``run_dir`` without restarting it.

    None when its QEMU is no longer running (it ended while nobody
    watched: the caller records that, from the serial log and stderr).
    Raises AdoptError when QEMU runs but does not greet on QMP in time:
    QEMU serves one QMP client at a time, so another owner still holds it.
    """
    record = process.read_pid_file(run_dir.qemu_pid)
    if record is None or not record.alive():
        return None
    try:
        qmp = QMPClient.connect(run_dir.qmp_socket, timeout=timeout, alive=record.alive)
    except (QMPConnectionError, QMPTimeout) as exc:
        if not record.alive():
            return None
        raise AdoptError(f"QEMU (pid {record.pid}) runs but its QMP socket does not answer: {exc}") from None
    daemons = {}
    for pid_file in sorted(run_dir.path.glob("virtiofsd-*.pid")):
        daemon = process.read_pid_file(pid_file)
        if daemon is not None and daemon.alive():
            daemons[pid_file.name[len("virtiofsd-"):-len(".pid")]] = daemon
    return AdoptedGuest(run_dir=run_dir, qemu=record, qmp=qmp, virtiofsds=daemons)
