"""guests.runtime.watch with a real QEMU: QMP events and process exit become
state-machine events; kill -9 shows as a crash within 2 s."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from guests.runtime import process
from guests.runtime.qmp import QMPClient
from guests.runtime.state import Event, State, transition
from guests.runtime.watch import GuestWatcher
from tests.test_runtime_qmp import QEMU, bare_qemu_argv

pytestmark = pytest.mark.skipif(QEMU is None, reason="needs qemu-system-x86_64")


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], QMPClient]:
    proc = process.spawn(bare_qemu_argv(tmp_path / "qmp.sock"), stderr_path=tmp_path / "err",
                         pid_path=tmp_path / "qemu.pid")
    return proc, QMPClient.connect(tmp_path / "qmp.sock", alive=lambda: proc.poll() is None)


def collect(watcher: GuestWatcher, timeout: float) -> list[Event]:
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    while not watcher.exited and time.monotonic() < deadline:
        events += watcher.poll(0.5)
    return events


def replay(events: list[Event]) -> State:
    state, expected = State.RUNNING, False
    for event in events:
        outcome = transition(state, event, stopping_expected=expected)
        state, expected = outcome.state, outcome.stopping_expected
    return state


def test_quit_is_a_shutdown_then_a_clean_exit(tmp_path: Path) -> None:
    proc, qmp = start(tmp_path)
    watcher = GuestWatcher(qmp, popen=proc)
    try:
        assert watcher.poll(0.1) == []
        qmp.execute("stop")
        assert watcher.poll(0.1) == [] and [e["event"] for e in watcher.qmp_log] == ["STOP"]
        qmp.execute("quit")
        events = collect(watcher, 10)
        assert events == [Event("shutdown", detail="host-qmp-quit"), Event("exited", returncode=0)]
        assert replay(events) is State.STOPPED
        assert watcher.poll(0.1) == []
    finally:
        watcher.close()
        process.terminate(proc)


def test_kill_9_is_seen_within_2_seconds_as_a_crash(tmp_path: Path) -> None:
    proc, qmp = start(tmp_path)
    watcher = GuestWatcher(qmp, popen=proc)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        events = collect(watcher, 5)
        assert time.monotonic() - killed < 2
        assert events == [Event("exited", returncode=-signal.SIGKILL)]
        assert replay(events) is State.CRASHED
    finally:
        watcher.close()
        process.terminate(proc)


def test_adopted_qemu_exit_has_no_status(tmp_path: Path) -> None:
    proc, qmp = start(tmp_path)
    qmp.close()
    record = process.read_pid_file(tmp_path / "qemu.pid")
    assert record is not None
    # A new owner: no Popen, its own QMP connection.
    watcher = GuestWatcher(QMPClient.connect(tmp_path / "qmp.sock"), record=record)
    try:
        os.kill(record.pid, signal.SIGKILL)
        events = collect(watcher, 5)
        assert events == [Event("exited", returncode=None)] and replay(events) is State.CRASHED
    finally:
        watcher.close()
        proc.wait()
    with pytest.raises(ValueError, match="exactly one"):
        GuestWatcher(None)


def test_a_process_already_gone_is_reported_at_once(tmp_path: Path) -> None:
    proc, qmp = start(tmp_path)
    qmp.close()
    record = process.read_pid_file(tmp_path / "qemu.pid")
    assert record is not None
    process.terminate(proc)
    watcher = GuestWatcher(None, record=record)
    assert watcher.poll(0) == [Event("exited", returncode=None)]
    watcher.close()
