"""The console relay against real unix sockets (a fake QEMU chardev) and
the test Redis: every byte in the transcript and to readers, once, in
order, across QEMU restarts and relay restarts; input in order; ranges
older than the Redis window served from the relay's disk."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import secrets
import time

import pytest
from django.conf import settings

from guests.runtime import offsetstream, transcript
from guests.runtime.relay import ConsoleRelay, redis_client
from tests.fakechardev import FakeChardev


def _keys():
    return offsetstream.console_keys(secrets.randbelow(10**9), "ttyS0")


async def _until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _read_all(redis, keys, offset, total, timeout=20.0):
    reader = offsetstream.StreamReader(redis, keys, offset)
    await reader.start()
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < total and time.monotonic() < deadline:
        chunks, _ = await reader.read(block_ms=200)
        for off, data in chunks:
            assert off == offset + len(got), "a chunk out of order or overlapping"
            got += data
    return bytes(got), reader


class Harness:
    def __init__(self, tmp_path, **relay_kwargs):
        self.tmp = tmp_path
        self.sock = tmp_path / "serial.sock"
        self.log = tmp_path / "serial.log"
        self.dir = tmp_path / "transcript"
        self.keys = _keys()
        self.kwargs = relay_kwargs
        self.chardev = FakeChardev(self.sock, self.log)

    async def emit(self, data):
        # The relay reads in this thread's event loop: write from another.
        await asyncio.to_thread(self.chardev.emit, data)

    def relay(self, redis):
        return ConsoleRelay(socket_path=self.sock, transcript_dir=self.dir, redis=redis, keys=self.keys,
                            logfile=self.log, reconnect_interval=0.05, **self.kwargs)

    async def attach(self, redis):
        """A relay running on this console, once it holds the connection."""
        relay = self.relay(redis)
        task = asyncio.create_task(relay.run())
        await asyncio.to_thread(self.chardev.wait_client)
        return relay, task


def run(coro):
    # A stuck step fails the test instead of hanging the run.
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_output_reaches_transcript_and_readers_in_order(tmp_path):
    h = Harness(tmp_path)
    # Written before any relay is attached: only QEMU's logfile has it.
    h.chardev.emit(b"early boot\r\n")

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        expected = bytearray(b"early boot\r\n")
        for i in range(200):
            data = os.urandom(secrets.randbelow(3000) + 1)
            expected += data
            await h.emit(data)
        await _until(lambda: relay.transcript.offset == len(expected), what="transcript")
        got, _ = await _read_all(redis, h.keys, 0, len(expected))
        assert got == bytes(expected)
        # A reader resuming from the middle gets exactly the rest.
        mid = len(expected) // 3 + 7
        rest, _ = await _read_all(redis, h.keys, mid, len(expected) - mid)
        assert rest == bytes(expected[mid:])
        assert transcript.read_range(h.dir, 0) == bytes(expected)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_qemu_restart_begins_a_new_boot_and_offsets_continue(tmp_path):
    h = Harness(tmp_path)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        await h.emit(b"boot one\r\n")
        await _until(lambda: relay.transcript.offset == 10, what="boot one")
        await asyncio.to_thread(h.chardev.restart)  # QEMU exits, a new one starts
        await h.emit(b"boot two, before the relay is back\r\n")
        await asyncio.to_thread(h.chardev.wait_client)
        await h.emit(b"boot two live\r\n")
        total = 10 + 36 + 15
        await _until(lambda: relay.transcript.offset == total, what="boot two")
        got, _ = await _read_all(redis, h.keys, 0, total)
        assert got == b"boot one\r\nboot two, before the relay is back\r\nboot two live\r\n"
        index = transcript.boots(h.dir)
        assert [(b.boot, b.start, b.end) for b in index] == [(1, 0, 10), (2, 10, total)]
        with gzip.open(h.dir / "boot-000001.log.gz") as fh:
            assert fh.read() == b"boot one\r\n"
        assert not (h.dir / "boot-000001.log").exists()
        events = await redis.xrange(h.keys.events)
        kinds = [f[b"type"] for _, f in events]
        assert kinds == [b"boot", b"boot-ended", b"boot"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_relay_restart_resumes_the_boot_from_qemus_logfile(tmp_path):
    h = Harness(tmp_path)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        await h.emit(b"A" * 1000)
        await _until(lambda: relay.transcript.offset == 1000, what="first bytes")
        task.cancel()  # the relay dies; the guest (QEMU) runs on
        await asyncio.gather(task, return_exceptions=True)
        await _until(lambda: not h.chardev.connected.is_set(), what="disconnect")
        h.chardev.emit(b"B" * 500)  # while nobody is attached: only the logfile has it
        relay, task = await h.attach(redis)
        await h.emit(b"C" * 300)
        await _until(lambda: relay.transcript.offset == 1800, what="resumed boot")
        assert [b.boot for b in transcript.boots(h.dir)] == [1]  # same QEMU: same boot
        got, _ = await _read_all(redis, h.keys, 0, 1800)
        assert got == b"A" * 1000 + b"B" * 500 + b"C" * 300
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_input_is_written_in_order_and_stale_input_is_reported(tmp_path):
    h = Harness(tmp_path)
    h.chardev.echo = False

    async def main():
        redis = redis_client(settings.REDIS_URL)
        # Queued long ago while no relay ran: must not be typed now.
        stale_id = f"{int(time.time() * 1000) - 60_000}-0"
        await redis.xadd(h.keys.input, {"d": b"rm -rf /tmp/x\r", "u": "alice"}, id=stale_id)
        relay, task = await h.attach(redis)
        keys = [f"key{i};".encode() for i in range(300)]
        pipe = redis.pipeline(transaction=False)
        for k in keys:
            pipe.xadd(h.keys.input, {"d": k, "u": "bob"})
        await pipe.execute()
        await _until(lambda: len(h.chardev.received) == sum(map(len, keys)), what="input")
        assert bytes(h.chardev.received) == b"".join(keys)
        events = [f for _, f in await redis.xrange(h.keys.events)]
        dropped = [e for e in events if e[b"type"] == b"input-dropped"]
        assert len(dropped) == 1 and dropped[0][b"user"] == b"alice"
        assert relay.stats.input_dropped == len(b"rm -rf /tmp/x\r")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_reader_behind_the_window_is_served_from_the_relays_disk(tmp_path):
    # A 256 KB window: a reader starting at 0 after 3 MB finds most of it
    # trimmed from Redis and fetches it by range request from the relay.
    h = Harness(tmp_path, window=256 * 1024)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        payload = os.urandom(3 * 1024 * 1024)
        for i in range(0, len(payload), 50_000):
            await h.emit(payload[i:i + 50_000])
        await _until(lambda: relay.transcript.offset == len(payload), what="all bytes")
        await _until(lambda: relay.stats.published == len(payload), what="published")
        length = await redis.xlen(h.keys.out)
        assert length < 30, "the stream is not trimmed to its window"
        got, reader = await _read_all(redis, h.keys, 0, len(payload))
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert reader.backfilled >= len(payload) - 2 * 256 * 1024
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_transcript_read_range_spans_boots(tmp_path):
    writer = transcript.TranscriptWriter(tmp_path)
    writer.begin("a")
    writer.append(b"hello ")
    writer.end()
    writer.begin("b")
    writer.append(b"world")
    assert transcript.read_range(tmp_path, 3, 9) == b"lo wor"
    assert transcript.head(tmp_path) == 11
    writer.close()
    again = transcript.TranscriptWriter(tmp_path)
    boot, resumed = again.begin("b")
    assert resumed and boot.boot == 2 and again.offset == 11


@pytest.fixture(autouse=True)
def _redis(redis_server):
    return redis_server


def test_query_replies_are_stripped_keys_kept():
    from guests.runtime.termreplies import strip_replies

    typed = b"ls\r\x1b[A\x1b[15~\x1bOP\x1b[1;5D"  # arrows, F5, F1, ctrl-left
    replies = b"\x1b[24;80R\x1b[?1;2c\x1b[>0;276;0c\x1b[0n\x1b]11;rgb:0000/0000/0000\x1b\\"
    assert strip_replies(replies + typed + b"\x1b[5;1R") == typed
    assert strip_replies(b"plain") == b"plain"


def test_relay_survives_a_redis_restart(tmp_path, redis_control):
    h = Harness(tmp_path)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        await h.emit(b"before\r\n")
        await _until(lambda: relay.stats.published == 8, what="published")
        await asyncio.to_thread(redis_control.restart)  # the stream is gone with it (no persistence)
        await h.emit(b"during and after\r\n")
        await asyncio.sleep(1.5)
        assert not task.done()
        await h.emit(b"later\r\n")
        await _until(lambda: relay.transcript.offset == 33, what="transcript")
        # Everything from 0: what Redis lost comes from the relay's disk.
        # (A fresh client, as a page reconnecting after the restart has.)
        reader_redis = redis_client(settings.REDIS_URL)
        got, _ = await _read_all(reader_redis, h.keys, 0, 33)
        await reader_redis.aclose()
        assert got == b"before\r\nduring and after\r\nlater\r\n"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_pool_follows_the_wanted_consoles_and_frees_a_deleted_guests_keys(tmp_path):
    from guests.runtime.relaypool import ConsoleSpec, RelayPool

    h = Harness(tmp_path)
    guest_id = secrets.randbelow(10**9)
    spec = ConsoleSpec(guest_id, "ttyS0", h.sock, h.log, h.dir)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        pool = RelayPool(redis)
        await pool.sync([spec])
        await asyncio.to_thread(h.chardev.wait_client)
        await h.emit(b"hello\r\n")
        keys = offsetstream.console_keys(guest_id, "ttyS0")
        deadline = time.monotonic() + 5
        while not await redis.exists(keys.out) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await pool.sync([spec])  # unchanged: the same relay runs on
        assert len(pool.running) == 1
        await pool.sync([])  # the guest was deleted
        assert not pool.running and not await redis.exists(keys.out)
        assert transcript.read_range(h.dir, 0) == b"hello\r\n"  # the transcript stays
        await pool.close()
        await redis.aclose()

    run(main())


def test_retention_deletes_old_ended_boots_only(tmp_path):
    writer = transcript.TranscriptWriter(tmp_path)
    for key in ("a", "b", "c"):
        writer.begin(key)
        writer.append(key.encode() * 10)
    writer.end()
    writer.begin("d")  # the running boot is never pruned
    writer.append(b"d" * 10)
    index = writer.index
    index[0].ended, index[1].ended = time.time() - 100 * 86400, time.time() - 10 * 86400
    pruned = writer.prune(30 * 86400)
    assert [b.boot for b in pruned] == [1]
    assert [b.boot for b in transcript.boots(tmp_path)] == [2, 3, 4]
    assert not (tmp_path / "boot-000001.log.gz").exists()
    assert transcript.read_range(tmp_path, 10, 40) == b"b" * 10 + b"c" * 10 + b"d" * 10


@pytest.mark.parametrize("inotify", [True, False])
def test_a_byte_logged_after_its_socket_wakeup_arrives_at_once(tmp_path, monkeypatch, inotify):
    """QEMU writes the log just after the socket, so the socket's wake-up
    usually finds the log without the byte: the log's inotify watch must
    bring it at once (the safety-net look is LOG_LOOK = 1 s away); without
    inotify the relay polls briefly after the socket had bytes."""
    from guests.runtime import logwatch, relay as relay_module

    if not inotify:
        monkeypatch.setattr(logwatch, "_LIBC", None)
    assert relay_module.LOG_LOOK >= 1.0
    h = Harness(tmp_path)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        slow = 0
        for i in range(20):
            t = time.monotonic()
            await h.emit(b"k")
            await _until(lambda: relay.transcript.offset == i + 1, what=f"byte {i}")
            slow += time.monotonic() - t > 0.5
        assert slow <= 2, f"{slow} of 20 bytes waited for the periodic look"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_a_broken_connection_to_a_running_instance_keeps_the_boot(tmp_path):
    """libvirt's stream also ends when libvirtd restarts while the domain
    runs on: a source that says the instance still runs keeps the boot open
    (the relay reconnects into it); output meanwhile comes from the log."""
    import socket as socketlib

    from guests.runtime.relaysource import ChardevSource

    class StillRunning(ChardevSource):
        async def still_running(self, key: str) -> bool:
            return await self.instance_key() == key

    h = Harness(tmp_path)

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay = ConsoleRelay(source=StillRunning(h.sock, h.log), transcript_dir=h.dir, redis=redis, keys=h.keys,
                             reconnect_interval=0.05)
        task = asyncio.create_task(relay.run())
        await asyncio.to_thread(h.chardev.wait_client)
        await h.emit(b"before ")
        await _until(lambda: relay.transcript.offset == 7, what="first bytes")
        with h.chardev.lock:
            h.chardev.client.shutdown(socketlib.SHUT_RDWR)  # the connection breaks, the guest runs on
        await _until(lambda: relay.stats.connects == 2, what="reconnect")
        await h.emit(b"after")
        await _until(lambda: relay.transcript.offset == 12, what="later bytes")
        assert [(b.boot, b.ended) for b in transcript.boots(h.dir)] == [(1, None)]
        assert transcript.read_range(h.dir, 0) == b"before after"
        kinds = [f[b"type"] for _, f in await redis.xrange(h.keys.events)]
        assert b"boot-ended" not in kinds
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())
