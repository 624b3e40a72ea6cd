"""Console throughput from a real guest: the stand-in guest under TCG
writes a burst to its serial line (ttyS0), through QEMU's chardev and
logfile -> ``manage.py consolerelay`` -> Redis Stream -> daphne -> N
websocket viewers.

Usage (as root, after scripts/setup):
.venv/bin/python bench/console_guest.py [MB] [VIEWERS,...] [CONSOLES]
(default 2 MB of /dev/urandom through base64, 1,10 viewers, ttyS0,hvc0).
For hvc0 (the virtio console) the command typed on ttyS0 redirects the
burst to /dev/hvc0 and the viewers watch hvc0.

The guest is the one the guest tests boot (tests/test_standin_boot.py
build_guest, tests/guest_helpers.py), run by the real host agent. An
operator's page (opened first, so it answers ash's cursor query) types
``head -c N /dev/urandom | base64; echo BURST-$((1+1))-END``; the viewers
(viewer role) measure from the moment the command is sent until each
has every byte up to the end marker, and each viewer's bytes must hash
equal to the relay's transcript of that range. Also printed: how fast
the guest itself produced the burst (the transcript's growth), which is
what bounds a real guest under TCG, not kdevweb.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from common import setup, start, stop

MB = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
COUNTS = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "1,10").split(",")]
CONSOLES = (sys.argv[3] if len(sys.argv) > 3 else "ttyS0,hvc0").split(",")
END = b"BURST-2-END"


async def drain(ws, out: bytearray, start_offset: int, frames: list[int] | None = None) -> None:
    """Read frames into ``out`` (checked contiguous), acknowledging like console.js."""
    acked = 0
    while True:
        frame = await ws.recv()
        if isinstance(frame, str):
            continue
        if frames is not None:
            frames[0] += 1
        offset = int.from_bytes(frame[:8], "big")
        assert offset == start_offset + len(out), f"gap/duplicate at {offset} (expected {start_offset + len(out)})"
        out += frame[8:]
        if len(out) - acked >= 64 * 1024:
            acked = len(out)
            await ws.send(json.dumps({"type": "ack", "offset": start_offset + acked}))


async def viewer(url: str, headers: dict, start_offset: int, ready: asyncio.Event, result: dict) -> None:
    from websockets.asyncio.client import connect

    data = bytearray()
    frames = [0]
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        ready.set()
        reader = asyncio.create_task(drain(ws, data, start_offset, frames))
        searched = 0
        while data.find(END, searched) < 0:
            searched = max(0, len(data) - len(END))
            await asyncio.sleep(0.002)
            if reader.done():
                reader.result()
        result["done"] = time.perf_counter()
        result["data"] = data
        result["frames"] = frames[0]
        reader.cancel()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def qemu_pid(run_dir: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu" in cmdline and str(run_dir).encode() in cmdline:
                return int(entry.name)
    return None


def main() -> None:
    lab, user, redis_proc = setup("console-guest")
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from guests import guest_services as gs
    from guests import services
    from guests.console import transcript_dir
    from guests.models import Role
    from guests.console import redis_sync
    from guests.runtime import offsetstream, transcript
    from guests.vm_models import Guest
    from tests.guest_helpers import cleanup, fake_build, make_host, short_dir
    from tests.helpers import sample_settings
    from tests.procs import free_port
    from tests.test_standin_boot import build_guest

    data_dir = Path(settings.DATA_DIR)
    base = short_dir("kcg-")
    host = make_host("cgbench", base)
    config = services.configuration_create(lab=lab, name="cg", user=user,
                                           settings=sample_settings(hostName="cg", profiles=[], testSuites=[]))
    assert config.latest is not None
    out = build_guest(base / "b", config.latest.settings)
    build = fake_build(lab, config.latest, user, str(out))
    guest = gs.guest_create(lab=lab, build=build, name="cg", host=host, kernel=host.kernels.get(),
                            memory_mib=512, vcpus=1, user=user)
    watcher = get_user_model().objects.create_user("watcher", password="bench-password-2")
    services.member_add(lab=lab, username="watcher", role=Role.VIEWER)
    redis_client = redis_sync()
    tdir = transcript_dir(host, guest.pk, "ttyS0")  # the one the shell is on; bursts may go to another
    port = free_port()
    procs = [start([sys.executable, "manage.py", "hostagent", "--host", host.name, "--no-probe"],
                   data_dir / "agent.log"),
             start([sys.executable, "manage.py", "consolerelay", "--host", host.name], data_dir / "relay.log"),
             start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "kdevweb.asgi:application"],
                   data_dir / "daphne.log")]

    def headers_for(who) -> dict:
        client = Client()
        client.force_login(who)
        return {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": f"http://127.0.0.1:{port}"}

    def wait_transcript(pattern: bytes, start: int, timeout: float, tdir: Path = tdir) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = transcript.read_range(tdir, start)
            at = text.find(pattern)
            if at >= 0:
                return start + at + len(pattern)
            time.sleep(0.2)
        raise TimeoutError(f"{pattern!r} not in the transcript; last: {transcript.read_range(tdir, start)[-2000:]!r}")

    samples: list[tuple[float, int]] = []
    end_sizes: dict[str, int] = {}
    sampling = threading.Event()

    def sample_head(tdir: Path) -> None:
        # When the relay's transcript reached each length: the guest's own output rate.
        while sampling.is_set():
            samples.append((time.perf_counter(), transcript.head(tdir)))
            time.sleep(0.01)

    async def type_on_ttys0(line: str, headers: dict) -> None:
        from websockets.asyncio.client import connect

        op_url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/ttyS0/"
        async with connect(f"{op_url}?from={transcript.head(tdir)}", additional_headers=headers,
                           max_size=None) as op:
            await asyncio.sleep(0.5)
            await op.send(b"\x1b[1;1R" + line.encode() + b"\r")
            await asyncio.sleep(0.5)

    try:
        time.sleep(3.0)  # Django start-up and the agent's first scan
        t_boot = time.monotonic()
        gs.guest_start(guest=guest, user=user)
        wait_transcript(b"]# ", wait_transcript(b"ready", 0, 180), 60)
        print(f"guest booted to its prompt in {time.monotonic() - t_boot:.1f} s (TCG, "
              f"{Guest.objects.get(pk=guest.pk).accel})")
        op_url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/ttyS0/"
        op_headers, view_headers = headers_for(user), headers_for(watcher)
        size = int(MB * 1024 * 1024)
        # Made once, untimed: busybox's base64 under TCG runs at ~70 KB/s,
        # which would be all the timed burst measured.
        asyncio.run(type_on_ttys0(f"head -c {size} /dev/urandom | base64 > /tmp/burst; echo PREP-$((1+1))-DONE",
                                  op_headers))
        wait_transcript(b"PREP-2-DONE", transcript.head(tdir) - 200 if transcript.head(tdir) > 200 else 0, 600)
        print(f"burst: cat of {size} random bytes in base64 (made beforehand in the guest's tmpfs) "
              f"-> console -> relay -> Redis -> daphne")
        for console, count in [(c, n) for c in CONSOLES for n in COUNTS]:
            time.sleep(1.0)
            url = f"ws://127.0.0.1:{port}/ws/labs/{lab.slug}/guests/{guest.pk}/console/{console}/"
            bdir = transcript_dir(host, guest.pk, console)
            head, op_head = transcript.head(bdir), transcript.head(tdir)
            burst = "cat /tmp/burst; echo BURST-$((1+1))-END"
            if console != "ttyS0":
                burst = f"({burst}) > /dev/{console}"

            async def run():
                from websockets.asyncio.client import connect

                typed = bytearray()
                async with connect(f"{op_url}?from={op_head}", additional_headers=op_headers,
                                   max_size=None) as op:
                    op_reader = asyncio.create_task(drain(op, typed, op_head))
                    await asyncio.sleep(0.5)  # its answerer lease
                    ready = [asyncio.Event() for _ in range(count)]
                    results = [{} for _ in range(count)]
                    tasks = [asyncio.create_task(viewer(f"{url}?from={head}", view_headers, head, r, res))
                             for r, res in zip(ready, results)]
                    await asyncio.gather(*(r.wait() for r in ready))
                    await asyncio.sleep(0.3)
                    t0 = time.perf_counter()
                    sampler = threading.Thread(target=sample_head, args=(bdir,), daemon=True)
                    sampler.start()
                    # The cursor-position reply first: ash asked at its prompt and waits for it.
                    await op.send(b"\x1b[1;1R" + burst.encode() + b"\r")
                    await asyncio.gather(*tasks)
                    op_reader.cancel()
                return t0, results

            entries_before = redis_client.xlen(offsetstream.console_keys(guest.pk, console).out)
            # Who used the 2 cores during the burst (the guest needs one for itself under TCG).
            who = {"qemu": qemu_pid(host.guest_run_dir(guest.pk)), "relay": procs[1].pid, "daphne": procs[2].pid,
                   "redis": redis_proc.pid, "bench (viewers)": os.getpid()}
            cpu_before = {name: cpu_seconds(pid) if pid else 0.0 for name, pid in who.items()}
            samples.clear()
            sampling.set()
            t0, results = asyncio.run(run())
            took = time.perf_counter() - t0
            cpu = {name: (cpu_seconds(pid) if pid else 0.0) - cpu_before[name] for name, pid in who.items()}
            end = wait_transcript(END, head, 10, bdir)
            sampling.clear()
            on_disk = next((t for t, h in samples if h >= end), float("nan")) - t0
            want = transcript.read_range(bdir, head, end)
            digest = hashlib.sha256(want).hexdigest()
            times = [r["done"] - t0 for r in results]
            equal = all(hashlib.sha256(bytes(r["data"][:end - head])).hexdigest() == digest for r in results)
            mb = (end - head) / 1e6
            end_sizes[console] = end - head
            print(f"{console} {count:3d} viewers: {mb:.2f} MB (base64 + CRLF) in {max(times):.2f} s; per viewer "
                  f"{mb / max(times):.2f}-{mb / min(times):.2f} MB/s; total {count * mb / max(times):.2f} MB/s; "
                  f"hashes equal to the transcript: {equal}")
            entries = redis_client.xlen(offsetstream.console_keys(guest.pk, console).out) - entries_before
            print(f"      {entries} stream entries ({(end - head) / max(entries, 1):.0f} B each on average); "
                  f"frames per viewer {min(r['frames'] for r in results)}-{max(r['frames'] for r in results)}")
            print(f"      the guest's own rate (transcript on disk complete after {on_disk:.2f} s): "
                  f"{mb / on_disk:.2f} MB/s; last viewer done {max(times) - on_disk:+.3f} s after that")
            print("      CPU used during the burst (% of one core): " + ", ".join(
                f"{name} {100 * used / took:.0f}%" if who[name] else f"{name} n/a" for name, used in cpu.items())
                + f"; load {os.getloadavg()[0]:.2f}")
        for console in CONSOLES:
            stats = [(b.boot, b.end) for b in transcript.boots(transcript_dir(host, guest.pk, console))]
            print(f"{console} transcript boots (boot, end offset): {stats}")

        # Baseline without kdevweb: the relay process stopped, this script
        # the ttyS0 socket's only client (hvc0 then has none: QEMU only
        # writes its log file), the same bursts timed to their end marker.
        stop(procs[1])
        time.sleep(1.0)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(host.guest_run_dir(guest.pk) / "serial.sock"))
        for console in CONSOLES:
            burst = "cat /tmp/burst; echo BURST-$((1+1))-END"
            marker = END
            if console != "ttyS0":
                burst, marker = f"({burst}) > /dev/{console}; echo DONE-$((1+1))-{console}", f"DONE-2-{console}".encode()
            time.sleep(1.0)
            sock.setblocking(False)
            try:
                while sock.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            sock.setblocking(True)
            t0 = time.perf_counter()
            sock.sendall(b"\x1b[1;1R" + burst.encode() + b"\r")
            seen = bytearray()
            while seen.find(marker, max(0, len(seen) - (1 << 16))) < 0:
                seen += sock.recv(1 << 16)
            took = time.perf_counter() - t0
            burst_bytes = end_sizes.get(console, 0)
            print(f"{console} without kdevweb (no relay; QEMU's log file only): the same burst in {took:.2f} s "
                  f"= {burst_bytes / 1e6 / took:.2f} MB/s")
        sock.close()
    finally:
        stop(*procs)
        stop(redis_proc)
        Guest.objects.filter(pk=guest.pk).update(state="stopped")
        cleanup(base)


if __name__ == "__main__":
    main()
