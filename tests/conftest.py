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
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings

from guests.flake import STATE_VERSION

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "nixos-flake-standin"


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


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    url = urlparse(settings.REDIS_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if _port_open(host, port):
        yield settings.REDIS_URL
        return
    tmp = tempfile.mkdtemp(prefix="kdevweb-redis-")
    proc = start_redis(port, tmp)
    yield settings.REDIS_URL
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def builds_dir(settings, tmp_path):
    settings.BUILDS_DIR = tmp_path / "builds"
    return settings.BUILDS_DIR


def sample_settings(**overrides) -> dict:
    """A valid settings dict on the offline stand-in (what the form produces)."""
    s = {
        "backend": "imageless",
        "mode": "guest",
        "nixosFlakeUrl": f"path:{STANDIN}",
        "hostName": "kdev",
        "user": {"name": "kdev", "extraGroups": None, "authorizedKeys": []},
        "profiles": [],
        "controller": False,
        "monitoring": None,
        "testSuites": [],
        "extraPackages": [],
        "sourceOverrides": {},
        "shares": {},
        "storage": {},
        "memoryMiB": 1024,
        "vcpus": 2,
        "diskSizeMiB": 20480,
        "stateVersion": STATE_VERSION,
    }
    s.update(overrides)
    return s


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
