"""Console throughput and keystroke latency through the real path:
fake QEMU chardev (tests/fakechardev.py) → relay (its own process) →
Redis Stream → daphne (ConsoleConsumer) → N websocket viewers that
acknowledge like console.js does.

Usage: .venv/bin/python bench/console_throughput.py [MB] [VIEWERS,...]
(default 20 MB and 1,10,50 viewers). Prints, per viewer count, the time
until every viewer had the whole burst, per-viewer and total MB/s, and
whether every viewer's bytes hash equal to the relay's transcript; then
keystroke → echo round trips (idle, and while another console floods);
then the relay's memory with 100 idle consoles.
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

from common import percentiles, setup, start, stop

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

    from builds.models import Build, Status
    from guests import services as guests
    from guests.runtime import transcript
    from guests.vm_models import Guest, Host, Kernel
    from tests.fakechardev import FakeChardev
    from tests.helpers import sample_settings
    from tests.procs import free_port

    data_dir = Path(settings.DATA_DIR)
    short = Path(os.path.join("/tmp", f"kcb-{os.getpid()}"))
    short.mkdir(exist_ok=True)
    config = guests.configuration_create(lab=lab, name="c", user=user, settings=sample_settings())
    host = Host.objects.create(name="bench", run_dir=str(short), accel="tcg")
    kernel = Kernel.objects.create(host=host, name="k", image="/boot/x", modules_dir="/lib/modules/x", version="x")
    revision = config.latest
    assert revision is not None
    build = Build.objects.create(lab=lab, revision=revision, created_by=user, attr="toplevel",
                                 status=Status.SUCCEEDED, out_path="/nix/store/x")

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

        # Keystroke round trips: one byte typed, its echo seen on the same page.
        async def round_trips(n: int) -> list[float]:
            from websockets.asyncio.client import connect

            url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/ttyS0/?from={transcript.head(tdir)}"
            out = []
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                await asyncio.sleep(0.3)
                for i in range(n):
                    key = bytes([97 + i % 26])
                    t = time.perf_counter()
                    await ws.send(key)
                    while True:
                        frame = await ws.recv()
                        if isinstance(frame, bytes) and key in frame[8:]:
                            break
                    out.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.01)
            return out

        print("keystroke -> echo, idle (ms):", percentiles(asyncio.run(round_trips(200))))
        flood_guest, flood_dev, flood_relay, _ = make_guest("flood")
        procs.append(flood_relay)
        stop_flood = threading.Event()

        def flood():
            chunk = os.urandom(65536)
            while not stop_flood.is_set():
                flood_dev.emit(chunk)

        async def flood_viewer():
            from websockets.asyncio.client import connect

            url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{flood_guest.pk}/console/ttyS0/"
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                got = 0
                while not stop_flood.is_set():
                    frame = await ws.recv()
                    if isinstance(frame, bytes):
                        got = int.from_bytes(frame[:8], "big") + len(frame) - 8
                        await ws.send(json.dumps({"type": "ack", "offset": got}))

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()

        async def during_flood():
            watcher = asyncio.create_task(flood_viewer())
            await asyncio.sleep(1.0)
            samples = await round_trips(200)
            stop_flood.set()
            watcher.cancel()
            return samples

        print("keystroke -> echo while another console floods (ms):", percentiles(asyncio.run(during_flood())))
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
