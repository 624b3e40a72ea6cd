"""The console relay under sustained output, on real unix sockets (a fake
QEMU chardev) and the test Redis: small writes merged into few entries
without holding a lone write after idle; a large log backlog read in
pieces, every byte once (tests/test_console_relay.py has the rest)."""

from __future__ import annotations

import asyncio
import os
import time

from django.conf import settings

from guests.runtime import offsetstream, transcript
from guests.runtime.relay import redis_client
from tests.test_console_relay import Harness, _read_all, _until, run


def test_sustained_small_writes_are_merged_and_a_lone_write_after_idle_goes_at_once(tmp_path, monkeypatch):
    """A real guest's serial output reaches the relay in ~130-byte reads;
    one entry each costs every viewer a wake-up and a frame. Under sustained
    output the relay publishes at most once per COALESCE (here widened to
    0.4 s so timing on a loaded machine cannot blur it); the first bytes
    after a quiet spell are published at once; a full entry is not held;
    offsets and bytes stay exact."""
    from guests.runtime import relaypublish

    monkeypatch.setattr(relaypublish, "COALESCE", 0.4)
    h = Harness(tmp_path)

    async def first_entry_after(redis, last_id, timeout=5.0):
        got = await redis.xread({h.keys.out: last_id}, count=1, block=int(timeout * 1000))
        assert got, "nothing published"
        return got[0][1][0]

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        expected = bytearray()

        # A lone write after idle: published at once, not held for COALESCE.
        await asyncio.sleep(0.5)
        t = time.monotonic()
        await h.emit(b"$ ")
        expected += b"$ "
        eid, fields = await first_entry_after(redis, "0-0")
        lone = time.monotonic() - t
        assert fields[b"d"] == b"$ " and offsetstream.entry_offset(eid) == 0
        assert lone < 0.2, f"a lone write after idle took {lone * 1000:.0f} ms to be published"

        # A trickle: 300 writes of 100 bytes, 3 ms apart (~1 s): few entries.
        before = await redis.xlen(h.keys.out)

        def trickle():
            for i in range(300):
                h.chardev.emit(b"%099d" % i + b"\n")
                time.sleep(0.003)

        await asyncio.to_thread(trickle)
        expected += b"".join(b"%099d" % i + b"\n" for i in range(300))
        await _until(lambda: relay.stats.published == len(expected), what="trickle published")
        entries = await redis.xlen(h.keys.out) - before
        # ~1 s / 0.4 s + the first; a stall of the writer thread adds a few.
        assert entries <= 12, f"300 small writes became {entries} entries"

        # Idle again: the next lone write is not held either.
        await asyncio.sleep(0.6)
        last = (await redis.xrevrange(h.keys.out, count=1))[0][0]
        t = time.monotonic()
        await h.emit(b"k")
        expected += b"k"
        eid, fields = await first_entry_after(redis, last)
        assert fields[b"d"] == b"k" and offsetstream.entry_offset(eid) == len(expected) - 1
        assert time.monotonic() - t < 0.2

        # A full entry's worth is not held back for COALESCE (the "k" was
        # just published, so from now on output is held).
        monkeypatch.setattr(relaypublish, "COALESCE", 30.0)
        big = os.urandom(offsetstream.CHUNK + 1000)
        for i in range(0, len(big), 1000):
            await h.emit(big[i:i + 1000])
        full = len(expected) + offsetstream.CHUNK
        expected += big
        await _until(lambda: relay.stats.published >= full, timeout=10, what="a full entry")

        got, _ = await _read_all(redis, h.keys, 0, relay.stats.published)
        assert got == bytes(expected[:len(got)])
        entries = await redis.xrange(h.keys.out)
        offsets = [offsetstream.entry_offset(e) for e, _ in entries]
        assert offsets == [sum(len(f[b"d"]) for _, f in entries[:i]) for i in range(len(entries))]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())


def test_a_backlog_in_the_log_is_read_in_pieces_and_whole(tmp_path, monkeypatch):
    """A relay attaching to a guest that logged much while no relay ran reads
    the log in LOG_READ_MAX pieces (its event loop serves every console of
    the host meanwhile), and still gets every byte once, also at the boot's end."""
    from guests.runtime import relay as relay_module

    monkeypatch.setattr(relay_module, "LOG_READ_MAX", 4096)
    h = Harness(tmp_path)
    backlog = os.urandom(100_000)
    h.chardev.emit(backlog)  # no client yet: only the log has it

    async def main():
        redis = redis_client(settings.REDIS_URL)
        relay, task = await h.attach(redis)
        await _until(lambda: relay.transcript.offset == len(backlog), what="the backlog")
        tail = os.urandom(50_000)
        with h.chardev.lock:  # the guest's last bytes reach the log only, then it exits
            assert h.chardev._log is not None
            h.chardev._log.write(tail)
            h.chardev._log.flush()
        await asyncio.to_thread(h.chardev.restart)
        await _until(lambda: relay.transcript.offset == len(backlog) + len(tail), what="backlog and tail")
        assert transcript.read_range(h.dir, 0) == backlog + tail
        got, _ = await _read_all(redis, h.keys, 0, len(backlog) + len(tail))
        assert got == backlog + tail
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()

    run(main())
