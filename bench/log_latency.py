"""Nix log line → shown in a connected websocket client, over a real
daphne + channels-redis + RQ worker, for a 100,000-line build.

Usage: .venv/bin/python bench/log_latency.py [LINES]
Latency of a line = time the client received it − time the worker read it
from nix's stderr (the `t` the stream carries; same machine, same clock).
Lines backfilled from the log file (after channel-layer drops) carry no `t`
and are counted separately. Also checks that no line is lost or repeated.
"""

import json
import sys
import time
import uuid

from common import percentiles, setup, start, stop

LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def main() -> None:
    lab, user, redis = setup("log")
    from django.conf import settings
    from django.test import Client
    from websockets.sync.client import connect

    from builds import logstore, services
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
    time.sleep(2.0)
    try:
        build = services.build_start(revision=config.latest, user=user)
        got, latencies, backfilled, duplicates = {}, [], 0, 0
        with connect(f"ws://127.0.0.1:{port}/ws/builds/{build.pk}/", max_size=None, open_timeout=20,
                     additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}) as ws:
            while True:
                msg = json.loads(ws.recv(timeout=300))
                now = time.time()
                if msg["type"] == "lines":
                    for i, line in enumerate(msg["lines"]):
                        duplicates += (msg["start"] + i) in got
                        got[msg["start"] + i] = line
                    if "t" in msg:
                        latencies += [(now - msg["t"]) * 1000] * len(msg["lines"])
                    else:
                        backfilled += len(msg["lines"])
                elif msg["type"] == "status" and msg["build"]["terminal"]:
                    break
        build = Build.objects.get(pk=build.pk)
        stored = logstore.read_lines(build.workdir)
        in_order = [got.get(i) for i in range(len(stored))] == stored
        lost = len(stored) - len(got)
        print(f"build {build.status}: {build.log_lines} log lines stored, {len(got)} received, lost={lost}, "
              f"duplicates={duplicates}, exact and in order={in_order}, backfilled from file={backfilled}")
        print(f"log line -> websocket client: {percentiles(latencies)} ms (live lines)")
        print(f"build wall time {(build.finished - build.started).total_seconds():.2f} s")
    finally:
        stop(worker, daphne, redis)


if __name__ == "__main__":
    main()
