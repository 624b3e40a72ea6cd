"""Enqueue → nix process started, with a resident worker.

Usage: .venv/bin/python bench/enqueue_latency.py [N]
For each of N builds (sequential, worker idle in between) the time from the
`build_start` call (row + on-commit enqueue) to the job's spawn of `nix` is
measured, for RQ's forking Worker and for SimpleWorker.
"""

import sys
import time

from common import percentiles, setup, start, stop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def main() -> None:
    lab, user, redis = setup("enqueue")
    from django.conf import settings

    from rq.job import Job

    from builds import services
    from builds.models import Build
    from guests import services as guests
    from tests.helpers import sample_settings

    config = guests.configuration_create(lab=lab, name="g", settings=sample_settings(hostName="benchq"), user=user)
    revision = config.latest
    assert revision is not None
    try:
        for label, extra in (("forking Worker", []), ("SimpleWorker", ["--simple"])):
            worker = start([sys.executable, "manage.py", "buildworker", *extra],
                           settings.DATA_DIR / f"worker-{label.replace(' ', '')}.log")
            time.sleep(2.0)  # let it start listening
            latencies = []
            for i in range(N + 3):
                t0 = time.time()
                build = services.build_start(revision=revision, user=user)
                while True:
                    row = Build.objects.filter(pk=build.pk).values("nix_started", "status").first()
                    assert row is not None
                    if row["nix_started"] or row["status"] in ("failed", "lost"):
                        break
                    time.sleep(0.002)
                if i >= 3:  # the first builds warm imports and nix's eval cache
                    assert row["nix_started"] is not None, row
                    latencies.append((row["nix_started"].timestamp() - t0) * 1000)
                # Wait for the job itself to end (it measures the closure
                # after the row is terminal), so the worker is idle again.
                job = Job.fetch(build.job_id, connection=services.build_queue().connection)
                while job.get_status(refresh=True) not in ("finished", "failed"):
                    time.sleep(0.01)
            print(f"enqueue -> nix started, {label}: {percentiles(latencies)} ms")
            stop(worker)
    finally:
        stop(redis)


if __name__ == "__main__":
    main()
