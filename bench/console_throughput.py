"""Console throughput and memory through the real path:
fake QEMU chardev (tests/fakechardev.py) → relay (its own process) →
Redis Stream → daphne (ConsoleConsumer) → N websocket viewers that
acknowledge like console.js does.

Usage: .venv/bin/python bench/console_throughput.py [MB] [VIEWERS,...]
(default 20 MB and 1,10,50 viewers). Prints, per viewer count, the time
until every viewer had the whole burst, per-viewer and total MB/s, and
whether every viewer's bytes hash equal to the relay's transcript; then
the relay's and daphne's memory while one slow viewer (never acknowledging)
watches a flood; then the relay's memory with 100 idle consoles.
Keystroke latency: bench/console_latency.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from common import fake_console_rows, setup, start, stop

MB = int(sys.argv[1]) if len(sys.argv) > 1 else 20
COUNTS = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "1,10,50").split(",")]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def viewer(url: str, headers: dict, total: int, start_offset: int, ready: asyncio.Event):
    from websockets.asyncio.client import connect

    digest = hashlib.sha256()
    got = 0
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        ready.set()
        acked = 0
        while got < total:
            frame = await ws.recv()
            if isinstance(frame, str):
                continue
            offset = int.from_bytes(frame[:8], "big")
            data = frame[8:]
            assert offset == start_offset + got, f"gap/duplicate at {offset} (expected {start_offset + got})"
            digest.update(data)
            got += len(data)
            if got - acked >= 256 * 1024 or got >= total:
                acked = got
                await ws.send(json.dumps({"type": "ack", "offset": start_offset + got}))
        done = time.perf_counter()
    return done, digest.hexdigest()


def main() -> None:
    lab, user, redis_proc = setup("console")
    from django.conf import settings
    from django.test import Client

    from guests.runtime import transcript
    from guests.vm_models import Guest
    from tests.fakechardev import FakeChardev
    from tests.procs import free_port

    data_dir = Path(settings.DATA_DIR)
    short = Path(os.path.join("/tmp", f"kcb-{os.getpid()}"))
    short.mkdir(exist_ok=True)
    config, host, kernel, build = fake_console_rows(lab, user, short)

    def make_guest(name: str):
        guest = Guest.objects.create(lab=lab, name=name, configuration=config, build=build, host=host,
                                     kernel=kernel, state="running")
        sock, log = short / f"{name}.sock", short / f"{name}.log"
        chardev = FakeChardev(sock, log, echo=True)
        relay = start([sys.executable, "-m", "guests.runtime.relay", "--socket", str(sock), "--logfile", str(log),
                       "--transcript", str(short / f"t-{name}"), "--guest", str(guest.pk), "--console", "ttyS0",
                       "--redis", settings.REDIS_URL], data_dir / f"relay-{name}.log")
        chardev.wait_client(20)
        return guest, chardev, relay, short / f"t-{name}"

    port = free_port()
    daphne = start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "kdevweb.asgi:application"],
                   data_dir / "daphne.log")
    client = Client()
    client.force_login(user)
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": f"http://127.0.0.1:{port}"}
    procs = [daphne]
    time.sleep(2.0)
    try:
        guest, chardev, relay, tdir = make_guest("burst")
        procs.append(relay)
        total = MB * 1024 * 1024
        print(f"burst {MB} MB of random bytes, fake chardev -> relay -> Redis -> daphne -> viewers (same machine)")
        for count in COUNTS:
            head = transcript.head(tdir)
            url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/ttyS0/?from={head}"
            payload = os.urandom(total)

            async def run():
                ready = [asyncio.Event() for _ in range(count)]
                tasks = [asyncio.create_task(viewer(url, headers, total, head, r)) for r in ready]
                await asyncio.gather(*(r.wait() for r in ready))
                await asyncio.sleep(0.3)
                t0 = time.perf_counter()

                def emit():
                    for i in range(0, total, 65536):
                        chardev.emit(payload[i:i + 65536])

                emitter = threading.Thread(target=emit)
                emitter.start()
                results = await asyncio.gather(*tasks)
                emitter.join()
                return t0, results

            t0, results = asyncio.run(run())
            want = hashlib.sha256(payload).hexdigest()
            on_disk = hashlib.sha256(transcript.read_range(tdir, head, head + total)).hexdigest()
            times = [done - t0 for done, _ in results]
            equal = all(h == want for _, h in results) and on_disk == want
            print(f"{count:3d} viewers: all done in {max(times):.2f} s; per viewer "
                  f"{MB / max(times):.1f}-{MB / min(times):.1f} MB/s; total {count * MB / max(times):.1f} MB/s; "
                  f"hashes equal to the transcript: {equal}")

        # One slow viewer during a flood: it takes the first MB and never
        # acknowledges. Its consumer stops pulling at HIGH_WATER, so neither
        # daphne nor the relay may grow while the guest keeps writing.
        flood_guest, flood_dev, flood_relay, _ = make_guest("flood")
        procs.append(flood_relay)

        async def slow_viewer(stop_at: asyncio.Event) -> int:
            from websockets.asyncio.client import connect

            url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{flood_guest.pk}/console/ttyS0/"
            got = 0
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                while not stop_at.is_set():
                    try:
                        frame = await asyncio.wait_for(ws.recv(), 0.2)
                    except TimeoutError:
                        continue
                    if isinstance(frame, bytes):
                        got += len(frame) - 8
            return got

        async def flood_with_slow_viewer() -> tuple[int, list[tuple[int, int]]]:
            stop_at = asyncio.Event()
            watcher = asyncio.create_task(slow_viewer(stop_at))
            await asyncio.sleep(0.5)
            chunk = os.urandom(65536)
            samples = []
            for i in range(4 * MB * 16):  # 4 x MB in 64 KB writes
                await asyncio.to_thread(flood_dev.emit, chunk)
                if i % 160 == 0:
                    samples.append((rss_kib(flood_relay.pid), rss_kib(daphne.pid)))
            await asyncio.sleep(1.0)
            samples.append((rss_kib(flood_relay.pid), rss_kib(daphne.pid)))
            stop_at.set()
            return await watcher, samples

        received, samples = asyncio.run(flood_with_slow_viewer())
        relay_mib = [r / 1024 for r, _ in samples]
        daphne_mib = [d / 1024 for _, d in samples]
        print(f"slow viewer (never acks) during a {4 * MB} MB flood: it received {received / 1048576:.2f} MB; "
              f"flood relay RSS {min(relay_mib):.1f}-{max(relay_mib):.1f} MiB, "
              f"daphne RSS {min(daphne_mib):.1f}-{max(daphne_mib):.1f} MiB over {len(samples)} samples")
        print(f"relay RSS after the bursts: {rss_kib(relay.pid) / 1024:.1f} MiB (one console)")

        # 100 idle consoles in one relay process (manage.py consolerelay's RelayPool).
        idle = []
        for i in range(100):
            g = Guest.objects.create(lab=lab, name=f"idle{i}", configuration=config, build=build, host=host,
                                     kernel=kernel, state="running")
            idle.append(g)
        pool = start([sys.executable, "manage.py", "consolerelay", "--host", "bench"], data_dir / "pool.log")
        procs.append(pool)
        time.sleep(8)
        print(f"consolerelay with {Guest.objects.filter(host=host).count() * 2} consoles "
              f"(100+ idle guests, sockets absent): RSS {rss_kib(pool.pid) / 1024:.1f} MiB")
    finally:
        stop(*procs)
        stop(redis_proc)
        # The flood writes GBs (log and transcript): a run must not fill the disk.
        shutil.rmtree(short, ignore_errors=True)


if __name__ == "__main__":
    main()
