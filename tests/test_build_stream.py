"""The live log over a real websocket (daphne + channels-redis + worker):
a client that joins mid-build gets every line exactly once, in order, even
when the channel layer drops messages; outsiders are refused."""

import json
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from builds import logstore, services
from builds.models import Build, Status
from tests.procs import start_daphne, wait_for
from tests.test_builds import finished, make_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def daphne(tmp_path):
    # A tiny channel capacity makes channels-redis drop most live batches:
    # the consumer must notice the gaps and read them back from the log.
    proc, port = start_daphne(tmp_path / "daphne.log", CHANNEL_CAPACITY="3")
    yield port
    proc.stop()


def _ws(port, build_id, client):
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return connect(f"ws://127.0.0.1:{port}/ws/builds/{build_id}/",
                   additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
                   open_timeout=10, max_size=None)


def collect(ws, timeout=180):
    """Receive until a terminal status; return (lines by offset, statuses)."""
    got: dict[int, str] = {}
    order: list[int] = []
    statuses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        if msg["type"] == "lines":
            for i, line in enumerate(msg["lines"]):
                assert msg["start"] + i not in got, "a line was sent twice"
                got[msg["start"] + i] = line
                order.append(msg["start"] + i)
        elif msg["type"] == "status":
            statuses.append(msg["build"]["status"])
            if msg["build"]["terminal"]:
                return got, order, statuses
    raise AssertionError("no terminal status received")


def test_late_joiner_gets_every_line_once_in_order(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 20000; }")
    workers(CHANNEL_CAPACITY="3")
    build = services.build_start(revision=config.latest, user=users["operator"])
    # Join mid-build: some lines are already on disk, more are coming.
    wait_for(lambda: len(logstore.read_lines(build.workdir, 0, 50)) >= 50, 60, what="the first log lines")
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        got, order, statuses = collect(ws)
    build = finished(build)
    assert build.status == Status.SUCCEEDED, build.error
    stored = logstore.read_lines(build.workdir)
    assert order == list(range(len(stored))), "lines arrived out of order or with gaps"
    assert [got[i] for i in order] == stored
    assert sum("standin log line" in line for line in stored) >= 20000
    assert statuses[-1] == "succeeded"


def test_joining_a_finished_build_replays_the_log(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"])
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        got, order, statuses = collect(ws, timeout=30)
    assert [got[i] for i in order] == logstore.read_lines(build.workdir)
    assert statuses == ["succeeded"]


def test_outsiders_and_anonymous_are_refused(client_for, users, lab, config, daphne):
    build = Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel")
    with pytest.raises(InvalidStatus):
        with _ws(daphne, build.pk, client_for(users["outsider"])):
            pass
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{daphne}/ws/builds/{build.pk}/",
                additional_headers={"Origin": f"http://127.0.0.1:{daphne}"}, open_timeout=10)
    # A foreign Origin is refused even with a valid session.
    client = client_for(users["viewer"])
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{daphne}/ws/builds/{build.pk}/", open_timeout=10,
                additional_headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}",
                                    "Origin": "http://evil.example"})


def test_restarting_redis_mid_build_keeps_outcome_and_log(users, lab, workers, redis_control):
    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 6; }")
    workers()
    build = services.build_start(revision=config.latest, user=users["operator"])
    wait_for(lambda: "sleeping" in "\n".join(logstore.read_lines(build.workdir)), 60, what="a running build")
    redis_control.restart()
    build = finished(build, timeout=120)
    assert build.status == Status.SUCCEEDED, build.error
    lines = logstore.read_lines(build.workdir)
    assert len(lines) == build.log_lines and lines[-1].startswith("kdevweb: succeeded")
    assert any("system closure ready" in line for line in lines)


def test_cancel_during_output_keeps_the_stream_exact(client_for, users, lab, workers, daphne):
    """The watchdog writes "cancel requested" while nix is still printing:
    both writers go through one lock, so offsets stay exact."""
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 400000; }")
    workers(CHANNEL_CAPACITY="3")
    build = services.build_start(revision=config.latest, user=users["operator"])
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        wait_for(lambda: len(logstore.read_lines(build.workdir, 0, 2000)) >= 2000, 60, what="output")
        services.build_cancel(build=build)
        got, order, statuses = collect(ws)
    build = finished(build)
    assert build.status == Status.CANCELLED
    stored = logstore.read_lines(build.workdir)
    assert any("cancel requested" in line for line in stored)
    assert order == list(range(len(stored))) and [got[i] for i in order] == stored
