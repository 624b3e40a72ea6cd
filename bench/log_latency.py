"""Nix log line → shown in a connected websocket client, over a real
daphne + Redis offset stream + RQ worker, for a 100,000-line build.

Usage: .venv/bin/python bench/log_latency.py [LINES]
Latency of a line = time the client received its frame − time the worker
read it from nix's stderr (the stamp every live frame carries in its header;
same machine, same clock). Bytes read back from disk (range requests to the
worker, or the log store) carry no stamp and are counted separately. The
client acknowledges like build.js; the check: every byte of the stored log
exactly once, in order (raw offsets contiguous, filtered bytes equal).
"""

import gzip
import json
import socket
import struct
import sys
import time
import uuid

from common import percentiles, setup, start, stop

LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
HEADER = struct.Struct(">QQd")


def main() -> None:
    lab, user, redis = setup("log")
    from django.conf import settings
    from django.test import Client
    from websockets.sync.client import connect

    from builds import logstore, services
    from builds.consumers import page_bytes
    from builds.models import Build
    from guests import services as guests
    from tests.helpers import sample_settings
    from tests.procs import free_port

    port = free_port()
    daphne = start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "kdevweb.asgi:application"],
                   settings.DATA_DIR / "daphne.log")
    worker = start([sys.executable, "manage.py", "buildworker"], settings.DATA_DIR / "worker.log")
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    config = guests.configuration_create(
        lab=lab, name="g", user=user, settings=sample_settings(hostName="l" + uuid.uuid4().hex[:10]),
        extra_module=f"{{ standin.logLines = {LINES}; }}")
    assert config.latest is not None
    for _ in range(200):  # daphne takes a few seconds on a busy machine
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    time.sleep(1.0)  # and the worker
    try:
        build = services.build_start(revision=config.latest, user=user)
        shown, latencies, backfilled, gaps, frames = bytearray(), [], 0, 0, 0
        next_offset = 0
        with connect(f"ws://127.0.0.1:{port}/ws/builds/{build.pk}/", max_size=None, open_timeout=20,
                     additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}) as ws:
            while True:
                frame = ws.recv(timeout=300)
                now = time.time()
                if isinstance(frame, bytes):
                    start_, end, stamp = HEADER.unpack(frame[:HEADER.size])
                    gaps += start_ != next_offset
                    next_offset = end
                    body = frame[HEADER.size:]
                    shown += body
                    frames += 1
                    lines = body.count(b"\n")
                    if stamp:
                        latencies += [now * 1000 - stamp] * lines
                    else:
                        backfilled += lines
                    ws.send(json.dumps({"type": "ack", "offset": end}))
                    continue
                msg = json.loads(frame)
                if msg["type"] == "status" and msg["build"]["terminal"]:
                    break
        build = Build.objects.get(pk=build.pk)
        fh, gzipped = logstore.raw_stream(build.workdir)
        assert fh is not None
        with fh:
            raw = gzip.decompress(fh.read()) if gzipped else fh.read()
        exact = next_offset == len(raw) and bytes(shown) == page_bytes(raw)
        received = shown.count(b"\n")
        print(f"build {build.status}: {build.log_lines} log lines ({len(raw)} bytes) stored, "
              f"{received} lines in {frames} frames received; offset gaps/overlaps={gaps}, "
              f"every byte once and in order={exact}, lines read back from disk={backfilled}")
        print(f"log line -> websocket client: {percentiles(latencies)} ms (live lines)")
        if build.finished and build.started:
            print(f"build wall time {(build.finished - build.started).total_seconds():.2f} s")
    finally:
        stop(worker, daphne, redis)


if __name__ == "__main__":
    main()
