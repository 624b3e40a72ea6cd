"""The offset stream's pieces with a real Redis: text cut at line
boundaries, a reader filled from a local store when the producer is gone,
a reader that never reads far past what the page has room for, and the
guest pages' event stream driving updates (not the periodic re-read)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest
import redis.asyncio
from django.conf import settings
from websockets.sync.client import connect

from guests.runtime import offsetstream


def test_split_lines_cuts_after_newlines_and_keeps_long_lines_whole():
    data = b"".join(b"x" * (i % 50) + b"\n" for i in range(5000))
    pieces = offsetstream.split_lines(100, data, size=1000)
    assert b"".join(p for _, p in pieces) == data
    assert all(p.endswith(b"\n") and len(p) <= 1000 for _, p in pieces)
    assert [o for o, _ in pieces] == [100 + sum(len(p) for _, p in pieces[:i]) for i in range(len(pieces))]
    long = b"a" * 3000 + b"\nb\n"
    assert [p for _, p in offsetstream.split_lines(0, long, size=1000)] == [b"a" * 3000 + b"\n", b"b\n"]


def _client():
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, password=settings.REDIS_PASSWORD, socket_timeout=None)


def test_reader_fills_from_local_when_redis_has_only_the_tail():
    async def run():
        client = _client()
        keys = offsetstream.StreamKeys("test", secrets.token_hex(6))
        data = b"".join(b"line %d\n" % i for i in range(20000))
        chunks = offsetstream.split_lines(0, data, size=4096)
        await offsetstream.publish(client, keys, chunks, window=8192)  # Redis keeps ~8 KB
        calls = []

        async def local(start, end):
            calls.append((start, end))
            return offsetstream.line_cut(data[start:end], complete=end - start <= len(data) - start)

        reader = offsetstream.StreamReader(client, keys, 0, local=local, range_timeout=0.2)
        got = bytearray()
        while len(got) < len(data):
            out, _ = await reader.read(block_ms=None, max_bytes=100_000)
            for offset, piece in out:
                assert offset == len(got)
                got += piece
        assert bytes(got) == data and reader.from_local > 0 and reader.backfilled == 0
        # The page's room bounds every local read (at least a chunk).
        assert max(end - start for start, end in calls) <= 100_000
        await client.delete(keys.out)
        await client.aclose()

    asyncio.run(run())


def test_reader_without_local_or_producer_reports_a_gap():
    async def run():
        client = _client()
        keys = offsetstream.StreamKeys("test", secrets.token_hex(6))
        await offsetstream.publish(client, keys, [(1000, b"late\n")])
        reader = offsetstream.StreamReader(client, keys, 0, range_timeout=0.2)
        with pytest.raises(offsetstream.Gap) as gap:
            await reader.read(block_ms=None)
        assert (gap.value.start, gap.value.end) == (0, 1000)
        await client.delete(keys.out)
        await client.aclose()

    asyncio.run(run())



def test_pump_sends_contiguous_entries_as_one_frame_with_the_earliest_stamp():
    """Many small entries read at once go out as one frame (up to CHUNK),
    with the first entry's offset; text (split_lines) is still cut at line
    ends; a merged frame carries its oldest bytes' stamp."""
    from kdevweb.wsstream import Flow, Pump

    async def run():
        client = _client()
        keys = offsetstream.StreamKeys("test", secrets.token_hex(6))
        # 12 entries of ~130 bytes, each published with its own stamp.
        data = b""
        for i in range(12):
            piece = b"%03d " % i + b"x" * 120 + b"\n"
            await offsetstream.publish(client, keys, [(len(data), piece)], stamp=1000.0 + i)
            data += piece
        frames = []

        async def send(offset, piece, stamp):
            frames.append((offset, piece, stamp))

        flow = Flow(300)  # a page resuming mid-entry (entry 2 is [250, 375))
        pump = Pump(offsetstream.StreamReader(client, keys, 300), flow, send=send)
        assert await pump.step(block_ms=None) == (len(data) - 300, 0)
        # Entry 2 was not read whole, so its stamp is not the frame's: entry 3's is.
        assert frames == [(300, data[300:], 1003.0)] and flow.sent == len(data)

        # Text past CHUNK: frames at line ends, each at most CHUNK, offsets exact.
        base = len(data)
        lines = b"".join(b"line %06d " % i + b"y" * (i % 200) + b"\n" for i in range(1500))
        pieces = offsetstream.split_lines(base, lines, size=4096)
        await offsetstream.publish(client, keys, pieces[:len(pieces) // 2], stamp=2000.0)
        await offsetstream.publish(client, keys, pieces[len(pieces) // 2:], stamp=3000.0)
        frames.clear()
        pump = Pump(offsetstream.StreamReader(client, keys, base), Flow(base), send=send,
                    split=offsetstream.split_lines)
        got = 0
        while got < len(lines):
            got += (await pump.step(block_ms=None))[0]
        assert b"".join(p for _, p, _ in frames) == lines
        assert [o for o, _, _ in frames] == [base + sum(len(p) for _, p, _ in frames[:i]) for i in range(len(frames))]
        assert all(p.endswith(b"\n") and len(p) <= offsetstream.CHUNK for _, p, _ in frames)
        assert len(frames) < len(pieces) / 4, f"{len(pieces)} entries went out as {len(frames)} frames"
        assert frames[0][2] == 2000.0 and frames[-1][2] == 3000.0
        await client.delete(keys.out)
        await client.aclose()

    asyncio.run(run())

@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_guest_events_drive_the_guest_pages(client_for, users, lab, tmp_path):
    """With the periodic re-read pushed to a minute, an update that arrives
    within a second came through the lab's event stream."""
    from guests.guest_stream import publish
    from guests.vm_models import Guest
    from tests.guest_helpers import cleanup, fake_build, fake_out_path, make_host, short_dir
    from tests.procs import start_daphne
    from tests.test_builds import make_config

    base = short_dir()
    proc, port = start_daphne(tmp_path / "daphne.log", GUESTS_RESNAPSHOT="60")
    try:
        from guests import guest_services

        config = make_config(lab, users["operator"])
        host = make_host("events", base, roots=[str(base)])
        build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
        guest = guest_services.guest_create(lab=lab, build=build, name="ev", host=host,
                                            kernel=host.kernels.first(), memory_mib=256, vcpus=1,
                                            user=users["operator"])
        cookie = f"sessionid={client_for(users['viewer']).cookies['sessionid'].value}"
        with connect(f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/?guest={guest.pk}", open_timeout=10,
                     additional_headers={"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            for state in ("running", "crashed"):
                Guest.objects.filter(pk=guest.pk).update(state=state)
                sent = time.monotonic()
                publish(lab.pk, guest.pk)
                update = json.loads(ws.recv(timeout=5))
                assert update["guests"][0]["state"] == state
                assert time.monotonic() - sent < 1.0
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
        cleanup(base)


def test_log_byte_reader_returns_whole_lines_while_written_and_after_compression(tmp_path):
    from builds import logstore

    writer = logstore.LogWriter(tmp_path)
    reader = logstore.ByteReader(tmp_path)
    got, offset = bytearray(), 0
    lines = [f"line {i} " + "x" * (i % 97) + " ✓" for i in range(3000)]
    for i in range(0, 3000, 300):
        writer.append(lines[i:i + 300])
        while data := reader.read(offset, offset + 1000):
            assert data.endswith(b"\n"), "a range ends after a complete line"
            got += data
            offset += len(data)
        assert offset == writer.size
    writer.close()
    logstore.compress(tmp_path)
    assert bytes(got) == "".join(line + "\n" for line in lines).encode()
    # From the compressed log, from any line start, in ranges of any size.
    middle = got.index(b"line 1500 ")
    fresh = logstore.ByteReader(tmp_path)
    assert fresh.read(middle, middle + 10**6) == bytes(got[middle:])
    assert fresh.read(len(got), len(got) + 100) == b""
