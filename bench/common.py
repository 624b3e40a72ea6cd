"""Shared set-up for the benchmarks: a throwaway data dir and Redis, the
real Django settings, migrated SQLite, a lab and an operator.

Benchmarks print their figures; they assert nothing (targets are in the
docs and the closing notes, not in timed tests).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(name: str):
    """Prepare the environment and Django; returns (lab, user, redis proc)."""
    data = Path(tempfile.mkdtemp(prefix=f"kdevweb-bench-{name}-"))
    port = _free_port()
    os.environ.update(KDEVWEB_DATA_DIR=str(data), REDIS_URL=f"redis://127.0.0.1:{port}/0",
                      DJANGO_SETTINGS_MODULE="kdevweb.settings", DEBUG="True")
    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from guests import services

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    lab = services.lab_create(name="Bench", slug="bench", user=user)
    return lab, user, redis


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "n=0"
    p = lambda q: values[min(len(values) - 1, int(round(q * (len(values) - 1))))]  # noqa: E731
    return (f"n={len(values)} p50={p(0.5):.1f} p95={p(0.95):.1f} max={values[-1]:.1f} "
            f"mean={statistics.mean(values):.1f}")


def child_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(DB_NAME=str(settings.DATABASES["default"]["NAME"]), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, env=child_env(**env), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def fake_console_rows(lab, user, run_dir: Path):
    """(config, host, kernel, build) rows for console benches whose guests
    are fake chardevs, not QEMU: nothing here is booted or built."""
    from builds.models import Build, Status
    from guests import services as guests
    from guests.vm_models import Host, Kernel
    from tests.helpers import sample_settings

    config = guests.configuration_create(lab=lab, name="c", user=user, settings=sample_settings())
    host = Host.objects.create(name="bench", run_dir=str(run_dir), accel="tcg")
    kernel = Kernel.objects.create(host=host, name="k", image="/boot/x", modules_dir="/lib/modules/x", version="x")
    revision = config.latest
    assert revision is not None
    build = Build.objects.create(lab=lab, revision=revision, created_by=user, attr="toplevel",
                                 status=Status.SUCCEEDED, out_path="/nix/store/x")
    return config, host, kernel, build
