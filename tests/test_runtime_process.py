"""guests.runtime.process: a started QEMU outlives its starter's process group
(what RQ kills) and is re-adopted from its pid file."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guests.runtime import process
from guests.runtime.qmp import QMPClient
from tests.test_runtime_qmp import QEMU, bare_qemu_argv

ROOT = Path(__file__).resolve().parent.parent

# Stands in for an RQ work horse: starts QEMU through the runtime, then waits
# to be killed together with its process group.
STARTER = """
import json, sys, time
from pathlib import Path
from guests.runtime import process
argv, run = json.loads(sys.argv[1]), Path(sys.argv[2])
proc = process.spawn(argv, stderr_path=run / "qemu.stderr", pid_path=run / "qemu.pid")
print(proc.pid, flush=True)
time.sleep(600)
"""


def test_spawn_runs_in_its_own_session_with_a_pid_file(tmp_path: Path) -> None:
    proc = process.spawn(["sh", "-c", "echo out; echo err >&2; sleep 30"], stderr_path=tmp_path / "err",
                         pid_path=tmp_path / "p.pid")
    try:
        assert os.getsid(proc.pid) == proc.pid and os.getpgid(proc.pid) == proc.pid
        record = process.read_pid_file(tmp_path / "p.pid")
        assert record is not None and record.pid == proc.pid and record.alive()
        # A pid that was reused by another process is not "ours".
        assert not process.ProcessRecord(proc.pid, record.start_time + 1).alive()
        deadline = time.monotonic() + 5
        while "err" not in (tmp_path / "err").read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "err").read_text().split() == ["out", "err"]
    finally:
        assert process.terminate(proc) == -signal.SIGTERM
    assert process.describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert process.describe_exit(3) == "exited 3"
    assert not record.alive()


def test_pid_file_garbage_is_no_record(tmp_path: Path) -> None:
    assert process.read_pid_file(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("12 x\n")
    assert process.read_pid_file(tmp_path / "bad") is None
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    assert process.read_pid_file(tmp_path / "bin") is None


@pytest.mark.skipif(QEMU is None, reason="needs qemu-system-x86_64")
def test_qemu_survives_its_starters_group_kill_and_is_adopted(tmp_path: Path) -> None:
    import json

    qmp_sock = tmp_path / "qmp.sock"
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, json.dumps(bare_qemu_argv(qmp_sock)), str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    record = None
    try:
        assert starter.stdout is not None
        qemu_pid = int(starter.stdout.readline())
        # What RQ does to a work horse on timeout or stop.
        os.killpg(starter.pid, signal.SIGKILL)
        starter.wait(10)
        record = process.read_pid_file(tmp_path / "qemu.pid")
        assert record is not None and record.pid == qemu_pid
        time.sleep(0.3)
        assert record.alive(), "QEMU died with its starter's process group"
        with QMPClient.connect(qmp_sock) as qmp:  # adopted: still answering
            assert qmp.execute("query-status")["status"] == "running"
        assert process.terminate_record(record, grace=5)
        assert not record.alive()
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGKILL)
            starter.wait()
        if record is not None and record.alive():
            record.signal(signal.SIGKILL)


def test_pidfd_signals_the_exit_of_a_process_that_is_not_ours(tmp_path: Path) -> None:
    proc = process.spawn(["sleep", "30"], stderr_path=tmp_path / "err", pid_path=tmp_path / "p.pid")
    record = process.read_pid_file(tmp_path / "p.pid")
    assert record is not None
    fd = process.open_pidfd(record)
    assert fd is not None
    try:
        assert select.select([fd], [], [], 0.1)[0] == []
        os.kill(proc.pid, signal.SIGKILL)
        started = time.monotonic()
        assert select.select([fd], [], [], 2)[0] == [fd]
        assert time.monotonic() - started < 1
    finally:
        os.close(fd)
        proc.wait()
    assert process.open_pidfd(record) is None
    assert process.open_pidfd(process.ProcessRecord(os.getpid(), 0)) is None  # pid reused
