"""The host agent: parent and watcher of one host's QEMUs and virtiofsds.

Runs as root (virtiofsd's namespace sandbox needs it; it is the only
privileged part of kdevweb) as ``manage.py hostagent --host NAME``. One
thread waits on the host's Redis list (guests.hostrequests) and wakes the
main loop through a pipe; the main loop waits on that pipe and on every
guest's QMP socket and pidfd at once (runtime.watch), so a QEMU's death is
seen the moment it happens. It acts only on what the guest row says
(``pending_action`` + ``request_id``), re-checking paths from the row
(shares under the host's roots, disk paths under its disk dir) before use.

Processes run in sessions of their own: killing the agent leaves guests
running, and a restarted agent re-adopts them from their pid files and QMP
sockets (``_adopt_all``), recording as crashed those that ended meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import select
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from guests import hostrequests
from guests.agent_followups import guest_files_remove, guest_restart_after_stop
from guests.agent_support import free_loopback_port, keep_sqlite_owned, tail_lines
from guests.libvirt_agent import LibvirtSide
from guests.guest_stream import publish
from guests.runtime import process
from guests.runtime.accel import probe_accel
from guests.runtime.bootspec import BootSpecError, read_bootspec
from guests.runtime.disks import DiskError, create_disk
from guests.runtime.kernel import KernelError, check_kernel
from guests.runtime.launch import (NIX_STORE, AdoptedGuest, AdoptError, LaunchError, RunningGuest, ShareSource,
                                   adopt_guest, start_guest)
from guests.runtime.qemu import Disk, GuestSpec, RunDir, Share, SpecError
from guests.runtime.shares import ShareError, resolve_share
from guests.runtime.state import Event, InvalidTransition, State, transition
from guests.runtime.watch import GuestWatcher
from guests.vm_models import ACTIVE_STATES, Action, Guest, GuestEvent, Host

log = logging.getLogger("kdevweb.hostagent")

SCAN_EVERY = 2.0  # seconds: rows with a request whose wake-up was lost; heartbeat
FORCE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a QEMU being forced off


class AgentRunning(RuntimeError):
    """Another agent already serves this host."""


@dataclass
class Managed:
    guest_id: int
    run_dir: RunDir
    watcher: GuestWatcher
    owned: RunningGuest | AdoptedGuest
    kill_at: float | None = None  # SIGKILL a forced-off QEMU that ignores SIGTERM


class HostAgent:
    def __init__(self, host_name: str, *, stop_timeout: float = 60.0, probe: bool = True,
                 store: Path = NIX_STORE, share_roots: list[str] | None = None) -> None:
        self.store = Path(os.path.realpath(store))
        # Given on the agent's command line (root's choice): a share must be
        # under one of these as well as under the Host row's roots, which the
        # web tier can write.
        self.share_roots = share_roots
        self.host = Host.objects.get(name=host_name)
        self.stop_timeout = stop_timeout
        self.probe = probe
        self.managed: dict[int, Managed] = {}
        self.requests: queue.Queue[hostrequests.Request] = queue.Queue()
        # Starts run in threads (a start waits for virtiofsd and QMP): the
        # loop keeps watching the other guests meanwhile.
        self.starting: set[int] = set()
        self.launched: queue.Queue[tuple[int, RunningGuest | None, GuestSpec | None, str]] = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.stopping = threading.Event()
        # Guests of libvirt builds run as libvirt domains (guests.libvirt_agent).
        self.libvirt = LibvirtSide(self)

    # -- wiring ----------------------------------------------------------------

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def request_stop(self, *_args) -> None:
        self.stopping.set()
        self.wake()

    def _listen(self) -> None:
        """Thread: BLPOP the host's list; well-formed requests go to the loop."""
        conn = None
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = hostrequests.redis()
                item = conn.blpop([self.host.request_queue], timeout=1)
            except Exception as exc:  # Redis down or restarting: the row scan covers meanwhile
                log.warning("request list unavailable (%s); retrying", exc)
                conn = None
                self.stopping.wait(1.0)
                continue
            if item is None:
                continue
            request = hostrequests.decode(item[1])
            if request is None:
                log.warning("ignored a malformed request on %s", self.host.request_queue)
                continue
            self.requests.put(request)
            self.wake()

    def _lock(self) -> None:
        """One agent per host: a second would fight the first over QMP and requests."""
        self.lock_file = open(Path(self.host.run_dir) / "agent.lock", "a+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentRunning(f"another host agent for {self.host.name} is running "
                               f"(it holds {self.lock_file.name})") from None

    def run(self) -> None:
        Path(self.host.run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock()
        if self.probe:
            result = probe_accel()
            Host.objects.filter(pk=self.host.pk).update(accel=result.accel, accel_reason=result.reason[:400],
                                                        accel_probed=timezone.now())
            self.host.refresh_from_db()
            log.info("accelerator: %s (%s)", result.accel, result.reason)
        self._adopt_all()
        self.libvirt.start()
        keep_sqlite_owned()
        listener = threading.Thread(target=self._listen, name="requests", daemon=True)
        listener.start()
        last_scan = 0.0
        log.info("host agent for %s running (%d guests adopted)", self.host.name, len(self.managed))
        while not self.stopping.is_set():
            fds = [self.wake_r]
            for item in self.managed.values():
                fds += item.watcher.filenos()
            try:
                select.select(fds, [], [], 1.0)
            except (OSError, ValueError):
                pass  # a watcher closed its fd meanwhile: look again
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            try:
                keep_sqlite_owned()
                self._watch()
                self.libvirt.drain()
                self._finish_starts()
                while not self.requests.empty():
                    request = self.requests.get_nowait()
                    self._act(request.guest, request.request)
                if time.monotonic() - last_scan >= SCAN_EVERY:
                    last_scan = time.monotonic()
                    self._scan()
            except Exception:
                log.exception("host agent loop")
                connection.close()  # a broken database connection reconnects next time
                self.stopping.wait(0.5)
        # Leave the guests running: their processes are in their own
        # sessions, and the next agent adopts them.
        for item in self.managed.values():
            item.watcher.close()
        self.libvirt.stop()
        log.info("host agent for %s stopped; %d guests left running", self.host.name, len(self.managed))

    # -- recording -------------------------------------------------------------

    def _event(self, guest: Guest, kind: str, text: str = "") -> None:
        GuestEvent.objects.create(guest=guest, kind=kind, text=text[:4000], source="agent", state=guest.state)

    def _apply(self, guest: Guest, event: Event) -> None:
        """Feed ``event`` to the state machine and store the outcome in
        ``guest`` (refreshed). Under a row lock, on the row as it is now: a
        user's request written meanwhile (pending_action, request_id,
        state) is neither lost nor overwritten with what the agent read before."""
        with transaction.atomic():
            row = Guest.objects.select_for_update().filter(pk=guest.pk).first()
            if row is None:
                return
            try:
                outcome = transition(State(row.state), event, stopping_expected=row.stopping_expected)
            except InvalidTransition as exc:
                self._event(row, event.kind, f"ignored: {exc}")
                return
            row.state = outcome.state.value
            row.stopping_expected = outcome.stopping_expected
            fields = ["state", "stopping_expected"]
            if event.kind == "exited":
                run = RunDir(self.host.guest_run_dir(row.pk))
                row.exit_status = event.returncode
                row.exit_text = outcome.note[:200]
                row.stopped = timezone.now()
                row.qemu_pid = None
                row.stop_deadline = None
                fields += ["exit_status", "exit_text", "stopped", "qemu_pid", "stop_deadline"]
                if row.state in (State.CRASHED.value, State.FAILED.value):
                    row.stderr_tail = tail_lines(run.qemu_stderr, 30)
                    row.serial_tail = tail_lines(run.serial_log, 40)
                    fields += ["stderr_tail", "serial_tail"]
                if row.pending_action in (Action.STOP, Action.FORCE_OFF):
                    row.pending_action = ""  # done: the guest is off
                    fields.append("pending_action")
            if event.kind == "started":
                row.started = timezone.now()
                fields.append("started")
            row.save(update_fields=fields)
            self._event(row, event.kind, outcome.note or event.detail)
        guest.refresh_from_db()
        publish(guest.lab_id, guest.pk)
        if event.kind == "exited":
            guest_restart_after_stop(guest=guest)  # "roll back and restart"

    # -- watching --------------------------------------------------------------

    def _watch(self) -> None:
        for guest_id, item in list(self.managed.items()):
            events = item.watcher.poll(0)
            if item.kill_at is not None and time.monotonic() > item.kill_at and not item.watcher.exited:
                self._signal(item, signal.SIGKILL)
                item.kill_at = None
            if not events:
                continue
            if item.watcher.exited:
                # Before the state is written: whoever sees `stopped` or
                # `crashed` finds no virtiofsd, pid file or socket left.
                self._cleanup(item)
            guest = Guest.objects.filter(pk=guest_id).first()
            for event in events:
                if guest is not None:
                    self._apply(guest, event)
            if guest is not None and guest.state == State.CRASHED.value and not item.watcher.exited:
                # A guest kernel panic leaves QEMU running: end it, so the
                # guest can be started again and its virtiofsd stop.
                self._force_off(item)
            if item.watcher.exited and guest is not None and guest.pending_action == Action.DELETE:
                self._delete(guest)

    def _cleanup(self, item: Managed) -> None:
        """After QEMU ended: its virtiofsds, pid files and sockets."""
        item.watcher.close()
        self.managed.pop(item.guest_id, None)
        item.owned.stop(grace=2.0)
        for name in ("qmp.sock", "serial.sock", "console.sock"):
            (item.run_dir.path / name).unlink(missing_ok=True)

    def _signal(self, item: Managed, sig: int) -> None:
        if isinstance(item.owned, RunningGuest):
            if item.owned.qemu.poll() is None:
                item.owned.qemu.send_signal(sig)
        else:
            item.owned.qemu.signal(sig)

    # -- requests --------------------------------------------------------------

    def _scan(self) -> None:
        close_old_connections()
        Host.objects.filter(pk=self.host.pk).update(agent_seen=timezone.now())
        for guest in Guest.objects.filter(host=self.host).exclude(pending_action=""):
            self._act(guest.pk, guest.request_id)
        self.libvirt.scan()
        now = timezone.now()
        for guest in Guest.objects.filter(host=self.host, state=State.STOPPING.value, stop_deadline__lt=now):
            item = self.managed.get(guest.pk)
            self._event(guest, "force off", f"no shutdown within {self.stop_timeout:g} s: forcing it off")
            Guest.objects.filter(pk=guest.pk).update(stop_deadline=None)
            if item is not None:
                self._force_off(item)

    def _act(self, guest_id: int, request_id: str) -> None:
        guest = Guest.objects.select_related("build", "kernel", "lab").filter(pk=guest_id, host=self.host).first()
        if guest is None or not guest.pending_action or guest.request_id != request_id:
            return  # another host's guest, done already, or superseded by a newer request
        action = guest.pending_action
        if guest.pk in self.starting and action != Action.START:
            return  # acted on by the first scan after its start finished
        if action != Action.DELETE:
            # Cleared first: a request that fails is recorded, never retried forever.
            Guest.objects.filter(pk=guest.pk, request_id=request_id).update(pending_action="")
            guest.pending_action = ""
        if self.libvirt.owns(guest):
            self.libvirt.act(guest, action)
            return
        item = self.managed.get(guest.pk)
        if action == Action.START:
            self._start(guest)
        elif action == Action.STOP and item is not None:
            self._powerdown(guest, item)
        elif action == Action.FORCE_OFF and item is not None:
            self._force_off(item)
        elif action == Action.REBOOT and item is not None:
            try:
                item.owned.qmp.execute("system_reset")
            except Exception as exc:
                self._event(guest, "reboot", f"QEMU did not reset: {exc}")
        elif action == Action.DELETE:
            if item is not None:
                self._force_off(item)  # _watch deletes once QEMU is gone
            else:
                self._delete(guest)
        elif action in (Action.STOP, Action.FORCE_OFF) and guest.state in ACTIVE_STATES:
            # Nothing of ours runs for it (e.g. its start failed meanwhile).
            self._apply(guest, Event("exited", returncode=None))

    def _powerdown(self, guest: Guest, item: Managed) -> None:
        try:
            item.owned.qmp.execute("system_powerdown")
        except Exception as exc:
            self._event(guest, "shutdown", f"ACPI shutdown could not be sent ({exc}); forcing off")
            self._force_off(item)
            return
        deadline = timezone.now() + timedelta(seconds=self.stop_timeout)
        Guest.objects.filter(pk=guest.pk).update(stop_deadline=deadline)

    def _force_off(self, item: Managed) -> None:
        if item.kill_at is not None:
            return  # already being forced off (a repeated request must not push the SIGKILL back)
        self._signal(item, signal.SIGTERM)
        item.kill_at = time.monotonic() + FORCE_GRACE

    def _delete(self, guest: Guest) -> None:
        guest_files_remove(host=self.host, guest=guest)

    def _fail(self, guest: Guest, message: str) -> None:
        guest.error = message[:4000]
        guest.save(update_fields=["error"])
        self._apply(guest, Event("failed", detail=message[:4000]))

    def _in_store(self, path: str | Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.store or self.store in real.parents

    def _spec(self, guest: Guest) -> tuple[GuestSpec, dict[str, ShareSource], Path]:
        """The QEMU spec from the row, every path re-checked (raises ValueError-like errors)."""
        # The rows are written by the unprivileged web tier: whatever they
        # name, QEMU (as root) reads only store paths as initrd and only a
        # kernel image as kernel.
        if not self._in_store(guest.build.out_path):
            raise LaunchError(f"the build output {guest.build.out_path} is not in {self.store}")
        boot = read_bootspec(guest.build.out_path)
        if not self._in_store(boot.initrd):
            raise LaunchError(f"the build's initrd {boot.initrd} is not in {self.store}")
        kernel = guest.kernel
        image, modules = Path(kernel.image), Path(kernel.modules_dir)
        try:
            check_kernel(image, modules)
        except KernelError as exc:
            raise LaunchError(f"kernel {kernel.name}: {exc}") from None
        run = RunDir(self.host.guest_run_dir(guest.pk))
        disks = []
        disk_dir = self.host.guest_disk_dir(guest.pk)
        for disk in guest.disks.all():
            path = disk_dir / f"{disk.serial}.qcow2"
            if Path(disk.path) != path:
                raise LaunchError(f"disk {disk.serial}: unexpected path {disk.path}")
            if not path.exists():
                disk_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                create_disk(path, disk.size_mib)
            disks.append(Disk(path, serial=disk.serial))
        sources, shares = {}, []
        for share in guest.shares.all():
            # Again now: a directory may have been swapped for a symlink since creation.
            path = resolve_share(share.host_path, self.host.roots)
            if self.share_roots is not None:
                resolve_share(str(path), self.share_roots)
            sources[share.tag] = ShareSource(path, share.read_only)
            shares.append(Share(share.tag, run.virtiofsd_socket(share.tag)))
        spec = GuestSpec(kernel=image, initrd=boot.initrd, init=boot.init, boot_params=boot.kernel_params,
                         run_dir=run, memory_mib=guest.memory_mib, vcpus=guest.vcpus,
                         accel="kvm" if self.host.accel == "kvm" else "tcg", name=guest.name, disks=tuple(disks),
                         shares=tuple(shares), ssh_port=free_loopback_port(), extra_cmdline=guest.extra_cmdline)
        return spec, sources, modules.parent

    def _start(self, guest: Guest) -> None:
        if guest.state != State.STARTING.value or guest.pk in self.starting:
            return
        if guest.pk in self.managed:
            self._fail(guest, "its QEMU is still running")
            return
        self.starting.add(guest.pk)
        threading.Thread(target=self._launch, args=(guest,), name=f"start-{guest.pk}", daemon=True).start()

    def _launch(self, guest: Guest) -> None:
        """Thread: build the spec from the row and start the processes; the
        loop records the outcome (_finish_starts)."""
        running, spec, error = None, None, ""
        try:
            spec, sources, modules_root = self._spec(guest)
            for name in ("serial.log", "console.log", "qemu.stderr"):
                (spec.run_dir.path / name).unlink(missing_ok=True)
            running = start_guest(spec, modules_root=modules_root, shares=sources)
        except (BootSpecError, LaunchError, SpecError, ShareError, DiskError, OSError) as exc:
            error = f"The start failed: {exc}"
        except Exception as exc:
            log.exception("start of guest %s", guest.pk)
            error = f"The start failed: unexpected error ({type(exc).__name__}: {exc})"
        finally:
            connection.close()  # this thread's own database connection
        self.launched.put((guest.pk, running, spec, error))
        self.wake()

    def _finish_starts(self) -> None:
        while not self.launched.empty():
            guest_id, running, spec, error = self.launched.get_nowait()
            self.starting.discard(guest_id)
            guest = Guest.objects.filter(pk=guest_id).first()
            if running is None or spec is None:
                if guest is not None:
                    self._fail(guest, error)
                continue
            item = Managed(guest_id, spec.run_dir, GuestWatcher(running.qmp, popen=running.qemu), running)
            self.managed[guest_id] = item
            if guest is None:
                self._force_off(item)
                continue
            guest.qemu_pid = running.qemu.pid
            guest.ssh_port = spec.ssh_port
            guest.accel = spec.accel
            guest.save(update_fields=["qemu_pid", "ssh_port", "accel"])
            self._apply(guest, Event("started"))
            if guest.state == State.STOPPING.value:  # a stop came in while it started
                self._powerdown(guest, item)

    def wait_starts(self, timeout: float = 30.0) -> None:
        """Until no start is in flight (tests, and a clean shutdown)."""
        deadline = time.monotonic() + timeout
        while self.starting and time.monotonic() < deadline:
            time.sleep(0.02)
            self._finish_starts()

    # -- adoption --------------------------------------------------------------

    def _adopt_all(self) -> None:
        for guest in Guest.objects.filter(host=self.host, state__in=ACTIVE_STATES):
            if self.libvirt.owns(guest):
                continue  # re-read from libvirt (LibvirtSide.resync)
            run = RunDir(self.host.guest_run_dir(guest.pk))
            try:
                adopted = adopt_guest(run)
            except AdoptError as exc:
                # Another agent for this host still holds it: leave it alone.
                self._event(guest, "adopt", f"could not adopt: {exc}")
                continue
            if adopted is None:
                self._reap_leftovers(run)
                if guest.state == State.STARTING.value and not (run.qemu_pid.exists() or guest.qemu_pid):
                    if guest.pending_action == Action.START:
                        continue  # its start request is still pending: the scan starts it
                    # Taken by an agent that died before QEMU ran: never a stuck `starting`.
                    self._fail(guest, "The host agent stopped while starting this guest; start it again.")
                    continue
                self._apply(guest, Event("exited", returncode=None, detail="ended while the host agent was down"))
                self._event(guest, "adopt", "QEMU ended while the host agent was not running")
                continue
            watcher = GuestWatcher(adopted.qmp, record=adopted.qemu)
            self.managed[guest.pk] = Managed(guest.pk, run, watcher, adopted)
            self._event(guest, "adopt", f"re-adopted QEMU pid {adopted.qemu.pid} and "
                                        f"{len(adopted.virtiofsds)} virtiofsd")
            if guest.state == State.STARTING.value:
                self._apply(guest, Event("started"))
            if guest.state == State.STOPPING.value and guest.stop_deadline is None:
                self._powerdown(guest, self.managed[guest.pk])

    @staticmethod
    def _reap_leftovers(run: RunDir) -> None:
        if not run.path.is_dir():
            return
        for pid_file in run.path.glob("virtiofsd-*.pid"):
            record = process.read_pid_file(pid_file)
            if record is not None:
                process.terminate_record(record, 2.0)
            pid_file.unlink(missing_ok=True)
        for sock in run.path.glob("*.sock"):
            sock.unlink(missing_ok=True)
        run.qemu_pid.unlink(missing_ok=True)
