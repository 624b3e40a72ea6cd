"""Build history first page with 10,000 builds: query count and server time.

Usage: .venv/bin/python bench/history_page.py [BUILDS]
(The ≤ 10 queries bound is also asserted in tests/test_build_history.py.)
"""

import sys
import time
from datetime import timedelta

from common import percentiles, setup, stop

BUILDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000


def main() -> None:
    lab, user, redis = setup("history")
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from builds.models import Build
    from guests import services as guests
    from tests.helpers import sample_settings

    try:
        configs = [guests.configuration_create(lab=lab, name=f"g{i}", settings=sample_settings(), user=user)
                   for i in range(20)]
        now = timezone.now()
        Build.objects.bulk_create(
            Build(lab=lab, revision=configs[i % 20].latest, attr="toplevel", status="succeeded", created_by=user,
                  started=now - timedelta(seconds=i + 30), finished=now - timedelta(seconds=i))
            for i in range(BUILDS)
        )
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        for label, url in (("first page", "/labs/bench/builds/"),
                           ("filtered, page 5", f"/labs/bench/builds/?configuration={configs[3].pk}&page=5")):
            client.get(url)  # warm
            times = []
            for _ in range(30):
                with CaptureQueriesContext(connection) as ctx:
                    t0 = time.perf_counter()
                    resp = client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200
            print(f"history {label} with {BUILDS} builds: {len(ctx.captured_queries)} queries, "
                  f"server time {percentiles(times)} ms")
    finally:
        stop(redis)


if __name__ == "__main__":
    main()
