"""Issue 7: an operator's Nix code runs in the nix-daemon's sandbox as a
build user, never as root on the build host, even though this test suite
(and so its workers) runs as root."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from builds import services
from builds.models import Status
from tests.test_builds import finished, log_text, make_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def root_secret():
    """A root-only (0600) file in a directory everyone may traverse, so only
    the file's own mode (and the sandbox) keep a builder out."""
    token = "kdevweb-secret-" + uuid.uuid4().hex
    path = Path("/tmp") / f"kdevweb-root-only-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chown(path, 0, 0)
    yield path, token
    path.unlink()


def store_paths_since(marker: float) -> list[Path]:
    return [p for p in Path("/nix/store").iterdir() if p.lstat().st_mtime >= marker - 1]


def test_builds_go_through_the_daemon(settings):
    assert settings.NIX_REMOTE == "daemon"
    proc = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store", "ping", "--store", "daemon"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"the nix-daemon does not answer (scripts/setup starts it): {proc.stderr}"


def test_extra_module_cannot_read_a_root_only_file(users, lab, workers, root_secret):
    path, token = root_secret
    probe = "probe-" + uuid.uuid4().hex[:10]
    # The builder says who it is, then tries to read the file into the log
    # and into its output (which would land in the world-readable store).
    script = f'echo "{probe} uid=$(id -u)"; cat {path}; cat {path} > $out'
    extra = ("{ ... }: { environment.systemPackages = [ (derivation { name = \"" + probe + "\"; "
             "system = \"x86_64-linux\"; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; "
             "args = [ \"-c\" ''" + script + "'' ]; }) ]; }")
    config = make_config(lab, users["operator"], extra_module=extra)
    marker = time.time()
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    text = log_text(build)
    assert f"{probe} uid=" in text, "the probe builder never ran:\n" + text[-3000:]
    assert f"{probe} uid=0" not in text, "a builder ran as root"
    assert build.status == Status.FAILED, "the builder read a root-only file"
    assert token not in text and token not in (build.error or "")
    leaked = []
    for p in store_paths_since(marker):
        if p.is_file() and token in p.read_text(errors="replace"):
            leaked.append(p)
    assert not leaked, f"the secret reached the store: {leaked}"


def test_a_saved_path_source_outside_the_allowed_roots_is_not_fetched(users, lab, workers, root_secret):
    """A revision saved before the rule (or before an admin narrowed
    ALLOWED_SOURCE_ROOTS) still carries its source: the build refuses it
    before nix copies the file into the world-readable store."""
    path, token = root_secret
    marker = time.time()
    config = make_config(lab, users["operator"], sourceOverrides={"fio": {"url": f"path:{path}", "input": "fio-src"}})
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    assert build.status == Status.FAILED and "outside the directories" in build.error
    text = log_text(build)
    assert token not in text and token not in build.error
    leaked = [p for p in store_paths_since(marker) if p.is_file() and token in p.read_text(errors="replace")]
    assert not leaked, f"the secret reached the store: {leaked}"


def test_extra_module_cannot_read_a_root_only_file_at_evaluation(users, lab, workers, root_secret):
    """Evaluation runs in the worker's nix client (root in this suite):
    flakes evaluate in pure mode, so absolute paths outside the flake are
    refused before anything is read."""
    path, token = root_secret
    marker = time.time()
    extra = f'{{ ... }}: {{ environment.etc."stolen".text = builtins.readFile "{path}"; }}'
    config = make_config(lab, users["operator"], extra_module=extra)
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    assert build.status == Status.FAILED
    text = log_text(build)
    assert token not in text and token not in (build.error or "")
    assert "forbidden in pure eval" in text or "forbidden in pure eval" in (build.error or ""), text[-2000:]
    leaked = [p for p in store_paths_since(marker) if p.is_file() and token in p.read_text(errors="replace")]
    assert not leaked
