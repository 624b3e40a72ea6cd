"""N guests on one host (TCG, 128 MiB each): start latency and the agent's memory.

Usage (as root, after scripts/setup): .venv/bin/python bench/guest_many.py [N]

All N starts are requested at once (N people pressing Start); each
latency is request -> the row says ``running`` (QEMU up and greeting on
QMP). The host agent starts guests one after another, so the later ones
wait for the earlier ones. Then the agent's resident memory with N guests
watched, and every guest is forced off and deleted.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from common import percentiles, setup, start, stop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    lab, user, redis = setup("guest-many")
    from django.conf import settings

    from guests import guest_services as gs
    from guests import services
    from guests.vm_models import Guest
    from tests.guest_helpers import fake_build, make_host, short_dir
    from tests.helpers import sample_settings
    from tests.test_standin_boot import build_guest

    base = short_dir("kb-")
    host = make_host("many", base, budget=128 * N)
    config = services.configuration_create(lab=lab, name="many", user=user, settings=sample_settings(hostName="many"))
    assert config.latest is not None
    build = fake_build(lab, config.latest, user, str(build_guest(base / "b", config.latest.settings)))
    guests = [gs.guest_create(lab=lab, build=build, name=f"g{i}", host=host, kernel=host.kernels.get(),
                              memory_mib=128, vcpus=1, user=user) for i in range(N)]
    agent = start([sys.executable, "manage.py", "hostagent", "--host", "many", "--no-probe"],
                  settings.DATA_DIR / "agent.log")
    time.sleep(3.0)
    rss_idle = rss_mib(agent.pid)
    latencies: dict[int, float] = {}
    try:
        t0 = time.monotonic()
        for guest in guests:
            gs.guest_start(guest=guest, user=user)
        while len(latencies) < N and time.monotonic() - t0 < 600:
            for pk, state in Guest.objects.filter(pk__in=[g.pk for g in guests]).values_list("pk", "state"):
                if pk not in latencies and state in ("running", "failed"):
                    latencies[pk] = (time.monotonic() - t0) * 1000
            time.sleep(0.01)
        failed = Guest.objects.filter(state="failed").count()
        time.sleep(2.0)
        rss_busy = rss_mib(agent.pid)
        for guest in guests:
            gs.guest_delete(guest=guest, user=user, delete_disks=True)
        while Guest.objects.exists() and time.monotonic() - t0 < 900:
            time.sleep(0.1)
    finally:
        stop(agent, redis)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{N} guests requested at once -> running (ms): {percentiles(list(latencies.values()))}; failed: {failed}")
    print(f"host agent RSS: {rss_idle:.1f} MiB idle, {rss_busy:.1f} MiB with {N} guests")


if __name__ == "__main__":
    main()
