"""Project-level checks: deploy settings, the admin, first-run set-up."""

import os
import stat
import subprocess
import sys
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command

from tests.helpers import ROOT


def test_check_deploy_is_clean(tmp_path):
    env = dict(os.environ, DEBUG="False", SECRET_KEY="x" * 20 + "kdevweb-production-secret-key-0123456789",
               ALLOWED_HOSTS="kdev.example.org", SITE_ROOT="https://kdev.example.org",
               KDEVWEB_DATA_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues (0 silenced)." in proc.stdout


@pytest.mark.django_db
def test_admin_lists_every_model(admin_client):
    for model in apps.get_models():
        if model._meta.app_label in {"guests", "builds"} or model._meta.model_name in {"user", "group"}:
            url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
            assert admin_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_first_run_creates_admin_once_and_demo(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    out = StringIO()
    call_command("kdevweb_init", stdout=out)
    pw_file = tmp_path / "admin-password"
    password = pw_file.read_text().strip()
    assert f"password: {password}" in out.getvalue() and len(password) >= 16
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="admin").check_password(password)
    again = StringIO()
    call_command("kdevweb_init", stdout=again)
    assert password not in again.getvalue() and pw_file.read_text().strip() == password
    from guests.models import Configuration

    demo = Configuration.objects.get(lab__slug="demo", name="example-guest")
    assert "nixos-flake-standin" in demo.latest.files["flake.nix"]


def test_production_static_files_collect(tmp_path):
    """Hashed, compressed statics (what DEBUG=False serves) build cleanly,
    including the vendored xterm.js and its source maps."""
    env = dict(os.environ, DEBUG="False", STATIC_ROOT=str(tmp_path / "static"), KDEVWEB_DATA_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = (tmp_path / "static" / "staticfiles.json").read_text()
    assert "vendor/xterm/xterm.js" in manifest and "kdevweb/build.js" in manifest
