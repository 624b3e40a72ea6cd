"""Shared fixtures: a real Redis, users in each role, a lab with a config.

Redis: the tests use the server at settings.REDIS_URL (scripts/test starts
one on its own port); if nothing answers there, one is started for the
session on that port, so `pytest` also works on its own.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlparse

import pytest
from django.conf import settings

from tests.helpers import sample_settings, skip_or_fail


def pytest_configure(config):
    # pytest-django only warns when it cannot drop the test database; on
    # PostgreSQL that means a connection leaked (still open at the end), and
    # the database stays behind. Make it fail the run.
    config.addinivalue_line(
        "filterwarnings", "error:Error when trying to teardown test databases:pytest.PytestWarning"
    )


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def start_redis(port: int, directory: str) -> subprocess.Popen:
    """Start a throwaway redis-server on loopback; wait until it answers."""
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", directory,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if _port_open("127.0.0.1", port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


class RedisControl:
    """The test Redis; restartable when this session started it."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.url, self.host, self.port = url, parsed.hostname or "127.0.0.1", parsed.port or 6379
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="kdevweb-redis-")

    def start(self) -> None:
        if not _port_open(self.host, self.port):
            self.proc = start_redis(self.port, self.dir)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.proc = start_redis(self.port, self.dir)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    control = RedisControl(settings.REDIS_URL)
    control.start()
    yield control
    control.stop()
    shutil.rmtree(control.dir, ignore_errors=True)


@pytest.fixture
def redis_control(redis_server):
    if redis_server.proc is None:
        skip_or_fail("Redis at REDIS_URL was not started by this test session; cannot restart it")
    return redis_server


@pytest.fixture
def workers(tmp_path):
    """Start real build workers (`manage.py buildworker`) for this test."""
    import django_rq

    from tests.procs import manage

    # Build ids restart in every test database, so job ids repeat: start clean.
    django_rq.get_connection("default").flushdb()
    started = []

    def start(*extra, **env):
        proc = manage(["buildworker", *extra], log=tmp_path / f"worker{len(started)}.log", **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # PBKDF2 costs ~0.3 s a user; tests create several per test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def source_roots(settings, tmp_path):
    # Local sources are allowed only under admin-listed roots (issue 7,
    # tests/test_security.py); form tests point sources at these.
    settings.ALLOWED_SOURCE_ROOTS = [*settings.ALLOWED_SOURCE_ROOTS, str(tmp_path), "/srv", "/a", "/b"]


@pytest.fixture(autouse=True)
def builds_dir(settings, tmp_path):
    settings.BUILDS_DIR = tmp_path / "builds"
    return settings.BUILDS_DIR


@pytest.fixture
def users(django_user_model):
    """One user per role in `lab`, plus an outsider who is in another lab."""
    make = django_user_model.objects.create_user
    return {
        "viewer": make("viewer", password="pw-viewer-1"),
        "operator": make("operator", password="pw-operator-1"),
        "admin": make("labadmin", password="pw-admin-1"),
        "outsider": make("outsider", password="pw-outsider-1"),
    }


@pytest.fixture
def lab(users):
    from guests import services
    from guests.models import Membership

    lab = services.lab_create(name="Storage lab", slug="storage", user=users["admin"])
    Membership.objects.create(lab=lab, user=users["viewer"], role="viewer")
    Membership.objects.create(lab=lab, user=users["operator"], role="operator")
    other = services.lab_create(name="Other lab", slug="other", user=users["outsider"])
    lab.other = other
    return lab


@pytest.fixture
def config(lab, users):
    from guests import services

    return services.configuration_create(
        lab=lab, name="xfs-guest", settings=sample_settings(), user=users["operator"], message="first"
    )


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login
