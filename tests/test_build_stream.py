"""The live log over a real websocket (daphne + Redis offset stream + worker):
every byte exactly once and in order — for a mid-build joiner when Redis
keeps only a few KB (older bytes come from the worker by range request),
across a Redis restart, for a page resuming with ``?from=``, for a finished
build with no producer (the log store); a slow page makes the server read
no further; outsiders are refused."""

import gzip
import json
import struct
import threading
import time

import pytest
import redis
from django.conf import settings
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from builds import logstore, services
from builds.consumers import page_bytes
from builds.models import Build, Status
from guests.runtime import offsetstream
from kdevweb.wsstream import HIGH_WATER
from tests.procs import start_daphne, wait_for
from tests.test_browser import page, server  # noqa: F401 - fixtures for the browser test
from tests.test_builds import finished, make_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HEADER = struct.Struct(">QQd")
TINY_WINDOW = "4096"  # bytes of a running build's log kept in Redis


@pytest.fixture
def daphne(tmp_path):
    proc, port = start_daphne(tmp_path / "daphne.log")
    yield port
    proc.stop()


def _ws(port, build_id, client, start=None):
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    query = f"?from={start}" if start is not None else ""
    return connect(f"ws://127.0.0.1:{port}/ws/builds/{build_id}/{query}",
                   additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
                   open_timeout=10, max_size=None)


class Page:
    """What build.js keeps: the next raw offset, the bytes shown, statuses."""

    def __init__(self, start=0):
        self.next = start
        self.shown = bytearray()
        self.statuses = []
        self.frames = 0

    def take(self, ws, frame, ack=True):
        if isinstance(frame, bytes):
            start, end, _t = HEADER.unpack(frame[:HEADER.size])
            assert start == self.next, f"frame at {start}, expected {self.next} (gap or duplicate)"
            self.next = end
            self.shown += frame[HEADER.size:]
            self.frames += 1
            if ack:
                ws.send(json.dumps({"type": "ack", "offset": end}))
            return None
        msg = json.loads(frame)
        assert msg["type"] != "skipped", msg
        if msg["type"] == "status":
            self.statuses.append(msg["build"]["status"])
        return msg

    def collect(self, ws, timeout=180):
        """Receive until a terminal status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.take(ws, ws.recv(timeout=deadline - time.monotonic()))
            if msg and msg["type"] == "status" and msg["build"]["terminal"]:
                return self
        raise AssertionError("no terminal status received")


def stored_bytes(build) -> bytes:
    # Through the store's own opener: the worker may compress the log while
    # this reads it, and checking log.gz then reading log raced with it.
    fh, gzipped = logstore.raw_stream(build.workdir)
    assert fh is not None, "no log stored"
    with fh:
        return gzip.decompress(fh.read()) if gzipped else fh.read()


def assert_exact(page, build, start=0):
    raw = stored_bytes(build)
    assert page.next == len(raw), "the terminal status came before the last byte"
    assert bytes(page.shown) == page_bytes(raw[start:])


def producer(build):
    client = redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD)
    raw = client.get(offsetstream.build_keys(build.pk).producer)
    return json.loads(raw) if raw else None


def test_late_joiner_gets_every_byte_once_in_order(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 20000; }")
    workers(BUILD_STREAM_WINDOW=TINY_WINDOW)
    build = services.build_start(revision=config.latest, user=users["operator"])
    # Join mid-build: the first bytes left Redis long ago, more are coming.
    wait_for(lambda: len(logstore.read_lines(build.workdir, 0, 500)) >= 500, 60, what="the first log lines")
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        page = Page().collect(ws)
    build = finished(build)
    assert build.status == Status.SUCCEEDED, build.error
    assert_exact(page, build)
    assert page.statuses[-1] == "succeeded"
    assert sum(b"standin log line" in line for line in page.shown.split(b"\n")) >= 20000
    # The early bytes came from the worker's file through range requests.
    assert producer(build)["served"] > 0


def test_joining_a_finished_build_reads_the_log_store(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"])
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    # Its keys expire; no producer runs: the log store alone serves it.
    client = redis.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD)
    keys = offsetstream.build_keys(build.pk)
    client.delete(keys.out, keys.producer, keys.requests)
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        page = Page().collect(ws, timeout=30)
    assert_exact(page, build)
    assert page.statuses == ["succeeded"]


def test_a_finished_build_is_served_while_redis_is_down(client_for, users, lab, workers, daphne, redis_control):
    config = make_config(lab, users["operator"])
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    viewer = client_for(users["viewer"])
    redis_control.stop()
    try:
        with _ws(daphne, build.pk, viewer) as ws:
            page = Page().collect(ws, timeout=30)
    finally:
        redis_control.start()
    assert_exact(page, build)
    assert page.statuses == ["succeeded"]


def test_resuming_with_from_has_no_gap_and_no_duplicate(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 30000; }")
    workers(BUILD_STREAM_WINDOW=TINY_WINDOW)
    build = services.build_start(revision=config.latest, user=users["operator"])
    viewer = client_for(users["viewer"])
    page = Page()
    with _ws(daphne, build.pk, viewer) as ws:
        while page.next < 100_000:  # a dropped connection mid-build
            page.take(ws, ws.recv(timeout=60))
    with _ws(daphne, build.pk, viewer, start=page.next) as ws:
        page.collect(ws)
    build = finished(build)
    assert build.status == Status.SUCCEEDED, build.error
    assert_exact(page, build)


def test_a_slow_page_makes_the_server_read_no_further(client_for, users, lab, workers, daphne):
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 200000; }")
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]), timeout=300)
    total = len(stored_bytes(build))
    assert total > 4 * HIGH_WATER
    page = Page()
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        # A page that renders nothing: the server stops at HIGH_WATER
        # unacknowledged bytes (plus at most a chunk) and holds the rest back.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                page.take(ws, ws.recv(timeout=0.5), ack=False)
            except TimeoutError:
                pass
        assert HIGH_WATER // 2 <= page.next <= HIGH_WATER + offsetstream.CHUNK, page.next
        ws.send(json.dumps({"type": "ack", "offset": page.next}))
        page.collect(ws, timeout=60)
    assert_exact(page, build)


def test_restarting_redis_mid_build_keeps_outcome_and_log(client_for, users, lab, workers, daphne, redis_control):
    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 6; }")
    workers()
    build = services.build_start(revision=config.latest, user=users["operator"])
    wait_for(lambda: "sleeping" in "\n".join(logstore.read_lines(build.workdir)), 60, what="a running build")
    restarter = threading.Timer(0.5, redis_control.restart)
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        restarter.start()
        page = Page().collect(ws, timeout=120)
    restarter.join()
    build = finished(build, timeout=120)
    assert build.status == Status.SUCCEEDED, build.error
    lines = logstore.read_lines(build.workdir)
    assert len(lines) == build.log_lines and lines[-1].startswith("kdevweb: succeeded")
    assert any("system closure ready" in line for line in lines)
    assert_exact(page, build)


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


def test_cancel_during_output_keeps_the_stream_exact(client_for, users, lab, workers, daphne):
    """The watchdog writes "cancel requested" while nix is still printing:
    both writers go through one lock, so offsets stay exact."""
    config = make_config(lab, users["operator"], extra_module="{ standin.logLines = 400000; }")
    workers(BUILD_STREAM_WINDOW=TINY_WINDOW)
    build = services.build_start(revision=config.latest, user=users["operator"])
    with _ws(daphne, build.pk, client_for(users["viewer"])) as ws:
        wait_for(lambda: len(logstore.read_lines(build.workdir, 0, 2000)) >= 2000, 60, what="output")
        services.build_cancel(build=build)
        page = Page().collect(ws)
    build = finished(build)
    assert build.status == Status.CANCELLED
    assert any("cancel requested" in line for line in logstore.read_lines(build.workdir))
    assert_exact(page, build)


@pytest.mark.browser
def test_the_page_reconnects_and_resumes_without_gap_or_duplicate(page, server, users, lab, workers):
    """build.js: a socket dropped mid-output reconnects with ?from= and the
    terminal ends with every line exactly once."""
    import re

    from tests.test_browser_firsthour import log_in

    config = make_config(lab, users["operator"],
                         extra_module="{ standin.logLines = 20000; standin.buildSeconds = 3; }")
    workers(BUILD_STREAM_WINDOW=TINY_WINDOW)
    build = services.build_start(revision=config.latest, user=users["operator"])
    log_in(page, server, users["viewer"])
    page.goto(f"{server}/labs/{lab.slug}/builds/{build.pk}/")
    page.wait_for_function("window.kdevwebLog && window.kdevwebLog.lines > 500", timeout=60000)
    page.evaluate("window.kdevwebLog.drop()")
    page.wait_for_selector("#status.status-succeeded", timeout=120000)
    state = page.evaluate("({...window.kdevwebLog})")
    assert state["reconnects"] >= 1 and state["skipped"] == 0 and state["reloads"] == 0
    build = finished(build)
    assert state["lines"] == build.log_lines
    text = page.evaluate("window.kdevwebLog.buffer()")
    numbers = [int(n) for n in re.findall(r"standin log line (\d+)", text)]
    assert numbers == list(range(20000)), "a line lost, repeated or out of order"
