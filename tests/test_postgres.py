"""The database settings for each engine, and what PostgreSQL does
differently from SQLite. scripts/test runs the whole suite on both."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.db import connection

from builds import bootspec
from builds.models import Build, Status
from tests.helpers import ROOT

SPEC = {
    "init": "/nix/store/aaaa-nixos-system/init",
    "initrd": "/nix/store/bbbb-initrd/initrd",
    "kernel": "/nix/store/cccc-linux/bzImage",
    "kernelParams": ["console=ttyS0", "root=tmpfs"],
    "label": "NixOS 25.05",
    "system": "x86_64-linux",
    "toplevel": "/nix/store/aaaa-nixos-system",
}


def db_settings(**env: str) -> dict:
    """DATABASES["default"] as a fresh process reads it from ``env``."""
    code = ("import json, django; from django.conf import settings; django.setup(); "
            "print(json.dumps(settings.DATABASES['default'], default=str))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**clean, "DJANGO_SETTINGS_MODULE": "kdevweb.settings", **env})
    return json.loads(out.stdout)


def test_sqlite_is_the_default_with_files_in_the_data_dir(tmp_path):
    db = db_settings(KDEVWEB_DATA_DIR=str(tmp_path))
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "kdevweb.sqlite3")
    # A file the worker processes the tests start can open too.
    assert db["TEST"]["NAME"] == str(tmp_path / "test.sqlite3")
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_postgres_test_database_is_a_short_name_not_a_path(tmp_path):
    # A data dir path longer than PostgreSQL's 63-byte names once became the
    # test database's name.
    deep = tmp_path / ("d" * 80)
    db = db_settings(KDEVWEB_DATA_DIR=str(deep), DB_ENGINE="django.db.backends.postgresql")
    assert db["NAME"] == "kdevweb"
    assert db["TEST"]["NAME"] == "test_kdevweb"
    assert db["OPTIONS"] == {}  # libpq's defaults
    assert db["CONN_MAX_AGE"] == 0
    named = db_settings(DB_ENGINE="django.db.backends.postgresql", DB_NAME="lab1")
    assert named["TEST"]["NAME"] == "test_lab1"


def test_postgres_connection_settings_come_from_the_environment():
    db = db_settings(DB_ENGINE="django.db.backends.postgresql", DB_NAME="kdev", DB_USER="kdevweb",
                     DB_PASSWORD="s3cret", DB_HOST="db.example.org", DB_PORT="5433", DB_SSLMODE="verify-full",
                     DB_CONN_MAX_AGE="60", DB_TEST_NAME="test_ci")
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "kdev", "kdevweb", "s3cret", "db.example.org", "5433")
    assert db["OPTIONS"] == {"sslmode": "verify-full"}
    assert db["CONN_MAX_AGE"] == 60 and db["CONN_HEALTH_CHECKS"] is True
    assert db["TEST"]["NAME"] == "test_ci"


def test_bootspec_rows_have_a_fixed_order():
    # jsonb's order: shortest key first.
    jsonb_order = dict(sorted(SPEC.items(), key=lambda kv: (len(kv[0]), kv[0])))
    for spec in (SPEC, jsonb_order, dict(reversed(list(SPEC.items())))):
        assert [k for k, _ in bootspec.rows(spec)] == list(bootspec.ORDER)
    assert dict(bootspec.rows(SPEC))["kernelParams"] == "console=ttyS0 root=tmpfs"
    assert [k for k, _ in bootspec.rows({**SPEC, "zzz": 1, "extra": 2})][-2:] == ["extra", "zzz"]
    assert bootspec.rows(None) == []


@pytest.mark.django_db
def test_build_page_lists_bootspec_in_reading_order(lab, config, users, client_for):
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                                 out_path=SPEC["toplevel"], bootspec=SPEC)
    build.refresh_from_db()  # whatever order the database hands back
    page = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/{build.pk}/").content.decode()
    table = page[page.index('id="bootspec"'):]
    table = table[:table.index("</table>")]
    assert re.findall(r"<th[^>]*>([^<]+)</th>", table) == list(bootspec.ORDER)


@pytest.mark.django_db
def test_build_summary_sends_bootspec_in_reading_order(lab, config):
    """The websocket's summary (the page redraws the table from it) keeps
    the same order through JSON."""
    from builds.presenters import build_summary

    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                                 out_path=SPEC["toplevel"], bootspec=SPEC)
    build.refresh_from_db()
    sent = json.loads(json.dumps(build_summary(build)))
    assert list(sent["bootspec"]) == list(bootspec.ORDER)
    assert sent["bootspec"]["kernelParams"] == SPEC["kernelParams"]


@pytest.mark.django_db
def test_postgres_runs_are_really_on_postgres():
    """Under scripts/test's second run every test above and elsewhere ran
    on PostgreSQL, not quietly on SQLite."""
    wanted = os.environ.get("DB_ENGINE", "django.db.backends.sqlite3")
    assert connection.vendor == {"django.db.backends.sqlite3": "sqlite"}.get(wanted, wanted.rsplit(".", 1)[-1])
    if connection.vendor == "postgresql":
        assert connection.settings_dict["NAME"].startswith("test_")
        assert len(connection.settings_dict["NAME"].encode()) <= 63


@pytest.mark.django_db(transaction=True)
def test_reaper_survives_losing_its_database_connection(lab, config, tmp_path):
    """A resident process outlives its connection (a database restart or
    failover; here the server ends it): the reaper reconnects next round
    instead of failing every round from then on."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.procs import manage, wait_for

    def lost_build():
        return Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.RUNNING,
                                    heartbeat=timezone.now() - timedelta(hours=1))

    first = lost_build()
    reaper = manage(["buildreaper", "--interval", "0.3"], log=tmp_path / "reaper.log", BUILD_LOST_AFTER="60")
    try:
        wait_for(lambda: Build.objects.get(pk=first.pk).status == Status.LOST, 30, what="the first reap")
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                assert cur.fetchall(), "the reaper had no connection to end"
        second = lost_build()
        wait_for(lambda: Build.objects.get(pk=second.pk).status == Status.LOST, 30,
                 what="a reap after the connection was lost:\n" + reaper.output())
    finally:
        reaper.stop()
