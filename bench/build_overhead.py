"""Building the example guest through kdevweb vs plain `nix build` of the
same flake: wall-time ratio (target ≤ 1.10).

Usage: .venv/bin/python bench/build_overhead.py [ROUNDS]
Every build gets a fresh host name, so nix really builds (no cached
output). kdevweb's time runs from the row's creation in `build_start` (enqueue on
commit) to its `finished` timestamp, with a resident forking worker; plain nix is timed around the
same `nix build` argv kdevweb runs, minus the internal-json log format.
"""

import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from common import setup, start, stop

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def main() -> None:
    lab, user, redis = setup("overhead")
    from django.conf import settings

    from builds import nixcmd, services
    from builds.models import Build
    from guests import services as guests
    from guests.flake import render_files, write_files
    from tests.helpers import sample_settings

    worker = start([sys.executable, "manage.py", "buildworker"], settings.DATA_DIR / "worker.log")
    time.sleep(2.0)
    plain, web = [], []
    try:
        for i in range(ROUNDS):
            s = sample_settings(hostName="p" + uuid.uuid4().hex[:10], profiles=["devel"], testSuites=["fstests"])
            with tempfile.TemporaryDirectory() as d:
                write_files(render_files(s), d)
                argv = ["nix", "build", "--offline", "--json", "--out-link", f"{d}/result", f"path:{d}#toplevel"]
                t0 = time.monotonic()
                subprocess.run(argv, check=True, capture_output=True, env=nixcmd.nix_env())
                plain.append(time.monotonic() - t0)
            s = sample_settings(hostName="w" + uuid.uuid4().hex[:10], profiles=["devel"], testSuites=["fstests"])
            config = guests.configuration_create(lab=lab, name=f"g{i}", settings=s, user=user)
            assert config.latest is not None
            build = services.build_start(revision=config.latest, user=user)
            while not Build.objects.get(pk=build.pk).is_terminal:
                time.sleep(0.1)  # a gentle poll: this machine has 2 cores
            build = Build.objects.get(pk=build.pk)
            assert build.status == "succeeded"
            assert build.finished is not None
            web.append((build.finished - build.created).total_seconds())
            time.sleep(0.5)  # let the job measure the closure before the next round
        p, w = statistics.median(plain), statistics.median(web)
        print(f"plain nix build: median {p:.3f} s {[round(x, 3) for x in plain]}")
        print(f"through kdevweb: median {w:.3f} s {[round(x, 3) for x in web]}")
        print(f"wall-time ratio kdevweb/plain: {w / p:.2f}")
    finally:
        stop(worker, redis)


if __name__ == "__main__":
    main()
