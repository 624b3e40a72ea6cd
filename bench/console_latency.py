"""Keystroke → echo round trip through the real console path, with a
breakdown of where the time goes.

Path: websocket client (this process) → daphne (ConsoleConsumer) → XADD
``:in`` → relay (its own process, ``python -m guests.runtime.relay``) →
chardev socket → fake guest that echoes (its own process,
``python -m tests.fakechardev``: socket first, ``logfile=`` just after, as
QEMU) → relay → XADD ``:out`` → consumer → websocket.

Usage: .venv/bin/python bench/console_latency.py [IDLE_SAMPLES] [FLOOD_SAMPLES]
(default 2000 and 1000). One key at a time, 5 ms apart. Prints p50/p95/p99
for the idle console and for one whose neighbour (another guest's console,
its own relay, one viewer acknowledging like console.js) floods at full
speed; then the median of each hop:

  ws→:in     page send → the entry in ``:in`` (websocket, daphne, consumer, XADD)
  :in→guest  → the fake guest read the key (relay's XREAD wake, socket write)
  guest      → echoed (the fake guest, a Python thread)
  echo→:out  → the entry in ``:out`` (relay: socket/log read, XADD)
  :out→ws    → the page has the frame (consumer's XREAD wake, websocket send)

The ``:in``/``:out`` times come from extra XREAD BLOCK readers in this
process, so they include one Redis fan-out each; the guest's times from
the fake chardev (CLOCK_MONOTONIC is shared by processes). Those readers
are not part of the product's path and cost two more wake-ups of this
process per key, competing for the cores with the relay and daphne: the
headline figures come from a run without them, the breakdown from a
second, tapped run (half the samples).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

from common import fake_console_rows, setup, start, stop

IDLE = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2000
FLOOD = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 1000
GAP = 0.005


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summary(values: list[float]) -> str:
    return (f"n={len(values)} p50={pct(values, .5):.2f} p95={pct(values, .95):.2f} "
            f"p99={pct(values, .99):.2f} max={max(values):.2f} ms")


async def tap(redis, key: str, stamps: list[float]) -> None:
    """Time each new entry of ``key`` as another reader of it sees it."""
    last = "$"
    while True:
        got = await redis.xread({key: last}, block=0)
        now = time.perf_counter()
        for _stream, entries in got:
            for eid, _fields in entries:
                last = eid
                stamps.append(now)


async def round_trips(url: str, headers: dict, keys, n: int, *,
                      tapped: bool) -> tuple[list[float], dict[str, list[float]]]:
    import redis.asyncio
    from django.conf import settings
    from websockets.asyncio.client import connect

    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    in_stamps: list[float] = []
    out_stamps: list[float] = []
    taps = [asyncio.create_task(tap(client, keys.input, in_stamps)),
            asyncio.create_task(tap(client, keys.out, out_stamps))] if tapped else []
    sent, got = [], []
    async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
        await asyncio.sleep(0.5)
        while True:  # drain the hello and anything queued
            try:
                await asyncio.wait_for(ws.recv(), 0.3)
            except TimeoutError:
                break
        in_stamps.clear()
        out_stamps.clear()
        for i in range(n):
            key = bytes([97 + i % 26])
            t = time.perf_counter()
            await ws.send(key)
            while True:
                frame = await ws.recv()
                if isinstance(frame, bytes) and key in frame[8:]:
                    break
            got.append(time.perf_counter())
            sent.append(t)
            await ws.send(json.dumps({"type": "ack", "offset": int.from_bytes(frame[:8], "big") + len(frame) - 8}))
            await asyncio.sleep(GAP)
    await asyncio.sleep(0.1)
    for task in taps:
        task.cancel()
    await client.aclose()
    total = [(b - a) * 1000 for a, b in zip(sent, got)]
    hops = {}
    if tapped and len(in_stamps) == n and len(out_stamps) == n:
        hops = {"ws→:in": [(b - a) * 1000 for a, b in zip(sent, in_stamps)],
                ":out→ws": [(b - a) * 1000 for a, b in zip(out_stamps, got)],
                "_in": in_stamps, "_out": out_stamps, "_sent": sent}
    return total, hops


def breakdown(hops: dict, guest_stamps: list) -> None:
    if not hops:
        print("  (hop breakdown unavailable: taps missed entries)")
        return
    if len(guest_stamps) == len(hops["_in"]):
        hops[":in→guest"] = [(g[0] - i) * 1000 for i, g in zip(hops["_in"], guest_stamps)]
        hops["guest"] = [(g[1] - g[0]) * 1000 for g in guest_stamps]
        hops["echo→:out"] = [(o - g[1]) * 1000 for o, g in zip(hops["_out"], guest_stamps)]
    for name in ("ws→:in", ":in→guest", "guest", "echo→:out", ":out→ws"):
        if name in hops:
            v = hops[name]
            print(f"  {name:10s} p50 {statistics.median(v):6.2f}  p99 {pct(v, .99):6.2f} ms")


def flood_viewer(url: str, headers: dict, rate_file: Path) -> None:
    """Read the flooded console and acknowledge like console.js until SIGTERM;
    the MB/s it received go to ``rate_file``."""
    import signal

    from websockets.asyncio.client import connect

    async def run() -> None:
        done = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
        got, t0 = 0, time.perf_counter()
        async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
            while not done.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                if isinstance(frame, bytes):
                    got += len(frame) - 8
                    end = int.from_bytes(frame[:8], "big") + len(frame) - 8
                    await ws.send(json.dumps({"type": "ack", "offset": end}))
        rate_file.write_text(str(got / (time.perf_counter() - t0) / 1e6))

    asyncio.run(run())


def main() -> None:
    lab, user, redis_proc = setup("latency")
    from django.conf import settings
    from django.test import Client

    from guests.runtime import offsetstream
    from guests.vm_models import Guest
    from tests.procs import free_port

    data_dir = Path(settings.DATA_DIR)
    short = Path(f"/tmp/kcl-{os.getpid()}")
    short.mkdir(exist_ok=True)
    config, host, kernel, build = fake_console_rows(lab, user, short)
    procs = []

    def make_guest(name: str, *extra: str):
        guest = Guest.objects.create(lab=lab, name=name, configuration=config, build=build, host=host,
                                     kernel=kernel, state="running")
        sock, log = short / f"{name}.sock", short / f"{name}.log"
        dev = start([sys.executable, "-m", "tests.fakechardev", "--socket", str(sock), "--log", str(log), *extra],
                    data_dir / f"chardev-{name}.log")
        procs.append(dev)
        while not sock.exists():
            time.sleep(0.05)
        relay = start([sys.executable, "-m", "guests.runtime.relay", "--socket", str(sock), "--logfile", str(log),
                       "--transcript", str(short / f"t-{name}"), "--guest", str(guest.pk), "--console", "ttyS0",
                       "--redis", settings.REDIS_URL], data_dir / f"relay-{name}.log")
        procs.append(relay)
        return guest, dev

    port = free_port()
    procs.append(start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                        "kdevweb.asgi:application"], data_dir / "daphne.log"))
    client = Client()
    client.force_login(user)
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": f"http://127.0.0.1:{port}"}
    try:
        stamps_file = short / "stamps.json"
        guest, echo_dev = make_guest("echo", "--stamps", str(stamps_file))
        keys = offsetstream.console_keys(guest.pk, "ttyS0")
        url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/ttyS0/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # daphne takes seconds to start on a loaded machine
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        time.sleep(1.0)
        print(f"keystroke -> echo round trip, one key every {GAP * 1000:.0f} ms; load {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} cores (shared with other sessions: figures are noisy)")
        idle, _ = asyncio.run(round_trips(url, headers, keys, IDLE, tapped=False))
        print("idle:", summary(idle))
        idle_tapped, idle_hops = asyncio.run(round_trips(url, headers, keys, IDLE // 2, tapped=True))
        print("idle, with the breakdown's taps:", summary(idle_tapped))

        flood_guest, _ = make_guest("flood", "--flood", "--no-echo")
        flood_url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{flood_guest.pk}/console/ttyS0/"

        # The flooded console's viewer is a process of its own, as another
        # browser would be: in this process it would take the CPU from the typist.
        rate_file = short / "flood-rate"
        viewer = start([sys.executable, __file__, "--flood-viewer", flood_url, json.dumps(headers), str(rate_file)],
                       data_dir / "flood-viewer.log")
        procs.append(viewer)
        time.sleep(1.5)
        flood, _ = asyncio.run(round_trips(url, headers, keys, FLOOD, tapped=False))
        flood_tapped, flood_hops = asyncio.run(round_trips(url, headers, keys, FLOOD // 2, tapped=True))
        stop(viewer)
        rate = float(rate_file.read_text()) if rate_file.exists() else float("nan")
        print(f"another console floods ({rate:.1f} MB/s to its viewer):", summary(flood))
        print("same, with the breakdown's taps:", summary(flood_tapped))
        stop(procs[1])  # the echo guest: writes its stamps
        guest_stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else []
        print("where the time goes, idle (hop medians / p99):")
        # One read per key (keys are typed one at a time), in the runs' order:
        # idle, idle tapped, flood, flood tapped.
        runs = [IDLE, IDLE // 2, FLOOD, FLOOD // 2]
        ok = len(guest_stamps) == sum(runs)
        at = [sum(runs[:i]) for i in range(len(runs))]
        breakdown(idle_hops, guest_stamps[at[1]:at[1] + runs[1]] if ok else [])
        print("where the time goes, under flood:")
        breakdown(flood_hops, guest_stamps[at[3]:at[3] + runs[3]] if ok else [])
    finally:
        stop(*procs)
        stop(redis_proc)
        # The flood writes GBs (log and transcript): a run must not fill the disk.
        shutil.rmtree(short, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--flood-viewer"]:
        flood_viewer(sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
