"""guests.runtime.qmp against a real QEMU (``-machine none``: starts in milliseconds)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from guests.runtime import process
from guests.runtime.qmp import QMPClient, QMPConnectionError, QMPError, QMPTimeout

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="needs qemu-system-x86_64")


def bare_qemu_argv(qmp: Path) -> list[str]:
    return [QEMU or "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
            "-chardev", f"socket,id=qmp,path={qmp},server=on,wait=off", "-mon", "chardev=qmp,mode=control"]


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "qmp.sock"
    proc = process.spawn(bare_qemu_argv(sock), stderr_path=tmp_path / "qemu.stderr")
    yield proc, sock
    process.terminate(proc)


def test_connect_waits_for_the_socket_and_negotiates(qemu) -> None:
    _, sock = qemu  # connect right after start: the socket may not exist yet
    with QMPClient.connect(sock, timeout=10) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] >= 7
        version = qmp.execute("query-version")
        assert version["qemu"]["major"] >= 7
        assert qmp.execute("query-status")["status"] == "running"


def test_qemu_errors_are_raised_with_their_class(qemu) -> None:
    _, sock = qemu
    with QMPClient.connect(sock) as qmp:
        with pytest.raises(QMPError) as info:
            qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert "no-such-command" in str(info.value)
        with pytest.raises(QMPError, match="GenericError|Invalid parameter"):
            qmp.execute("human-monitor-command", {"command-line": "info version", "bogus": 1})
        # The connection is still usable after an error.
        assert "7." in qmp.execute("human-monitor-command", {"command-line": "info version"})


def test_events_during_a_command_are_queued_in_order(qemu) -> None:
    _, sock = qemu
    with QMPClient.connect(sock) as qmp:
        qmp.execute("stop")
        qmp.execute("cont")
        qmp.execute("query-status")  # both events have arrived by now, around these replies
        assert [e["event"] for e in qmp.events] == ["STOP", "RESUME"]
        # Waiting for a later event leaves the earlier one queued.
        assert qmp.wait_event("RESUME", timeout=1)["event"] == "RESUME"
        assert [e["event"] for e in qmp.events] == ["STOP"]
        assert [e["event"] for e in qmp.get_events()] == ["STOP"]
        assert qmp.get_events() == []
        with pytest.raises(QMPTimeout):
            qmp.wait_event("SHUTDOWN", timeout=0.2)


def test_wait_event_reads_events_as_they_arrive(qemu) -> None:
    proc, sock = qemu
    with QMPClient.connect(sock) as qmp:
        qmp.execute("quit")
        event = qmp.wait_event("SHUTDOWN", timeout=5)
        assert event["data"]["reason"] == "host-qmp-quit"
        assert proc.wait(10) == 0
        with pytest.raises(QMPConnectionError, match="closed"):
            qmp.wait_event(timeout=5)


def test_connect_gives_up_on_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(QMPConnectionError, match="cannot connect"):
        QMPClient.connect(tmp_path / "nothing.sock", timeout=0.2)


def test_a_peer_that_is_not_qemu_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve(reply: bytes) -> None:
        conn, _ = server.accept()
        conn.sendall(reply)
        conn.close()

    for reply, message in ((b'{"hello": 1}\n', "not a QMP greeting"), (b"garbage\n", "invalid JSON"),
                           (b"[1]\n", "non-object"), (b"", "closed")):
        thread = threading.Thread(target=serve, args=(reply,))
        thread.start()
        with pytest.raises(QMPConnectionError, match=message):
            QMPClient.connect(path, timeout=2)
        thread.join()
    server.close()
