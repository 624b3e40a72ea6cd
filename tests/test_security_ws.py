"""Issue 7, the build websocket: Origin by scheme, host and port; access
re-checked while connected; bad frames closed with a code, not a traceback;
terminal control sequences never reach the page."""

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from builds.models import Build
from guests.models import Membership
from tests.procs import start_daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def daphne(tmp_path):
    proc, port = start_daphne(tmp_path / "daphne.log")
    yield port, proc
    proc.stop()


@pytest.fixture
def queued(lab, config, users):
    # A queued build keeps its socket open (queue position updates).
    return Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel")


def _ws(port, build_id, client, origin):
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return connect(f"ws://127.0.0.1:{port}/ws/builds/{build_id}/", open_timeout=10,
                   additional_headers={"Cookie": cookie, "Origin": origin})


def test_origin_must_match_scheme_host_and_port(client_for, users, queued, daphne):
    port, _ = daphne
    client = client_for(users["viewer"])
    for origin in (f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}", f"https://127.0.0.1:{port}",
                   "http://127.0.0.1", "http://evil.example", "null", ""):
        with pytest.raises(InvalidStatus):
            with _ws(port, queued.pk, client, origin):
                pass
    with _ws(port, queued.pk, client, f"http://127.0.0.1:{port}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"


def test_removed_member_loses_the_stream_within_a_second(client_for, users, queued, daphne):
    port, _ = daphne
    with _ws(port, queued.pk, client_for(users["viewer"]), f"http://127.0.0.1:{port}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
        Membership.objects.filter(lab=queued.lab, user=users["viewer"]).delete()
        removed = time.monotonic()
        with pytest.raises(ConnectionClosed) as exc:
            while True:
                ws.recv(timeout=5)
        took = time.monotonic() - removed
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4403
    assert took < 1.0, f"closed {took:.2f} s after the removal"


def test_bad_frames_get_a_close_code_not_a_traceback(client_for, users, queued, daphne):
    port, proc = daphne
    client = client_for(users["viewer"])
    for frame in ("{not json", b"\x00\xff binary"):
        with _ws(port, queued.pk, client, f"http://127.0.0.1:{port}") as ws:
            ws.recv(timeout=10)
            ws.send(frame)
            with pytest.raises(ConnectionClosed) as exc:
                while True:
                    ws.recv(timeout=5)
            assert exc.value.rcvd is not None and exc.value.rcvd.code == 4400
    time.sleep(0.3)
    assert "Traceback" not in proc.output()


def test_terminal_control_sequences_never_reach_the_page(client_for, users, lab, config, daphne):
    from builds import logstore
    from builds.models import Status

    port, _ = daphne
    build = Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel",
                                 status=Status.FAILED)
    build.workdir.mkdir(parents=True)
    hostile = ["keep \x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[0m",
               "line one", "\x1b[1A\x1b[2Kerased the line above",
               "a \x1b]8;;https://evil.example/\x1b\\disguised link\x1b]8;;\x1b\\ here",
               "\x1b]0;new title\x07\x1b]52;c;cHduZWQ=\x07clipboard", "\x1b[2J\x1b[Hclear screen",
               "bell\x07 back\x08space \x9b2J c1"]
    writer = logstore.LogWriter(build.workdir)
    writer.write(hostile)
    writer.close()
    shown = b""
    with _ws(port, build.pk, client_for(users["viewer"]), f"http://127.0.0.1:{port}") as ws:
        while True:
            frame = ws.recv(timeout=10)
            if isinstance(frame, bytes):  # [24-byte header: raw offsets, time][filtered bytes]
                shown += frame[24:]
                continue
            msg = json.loads(frame)
            if msg["type"] == "status" and msg["build"]["terminal"]:
                break
    got = shown.decode().split("\n")[:-1]
    assert got[0] == hostile[0], "SGR colours are kept"
    assert got[1:] == ["line one", "erased the line above", "a disguised link here", "clipboard",
                       "clear screen", "bell backspace  c1"]
    # The stored log (and so the raw download) keeps the bytes.
    assert logstore.read_lines(build.workdir) == hostile
