"""Builds end to end: real Redis, real RQ workers, real `nix build` of the
offline example guest, real failure and cancellation."""

import gzip
import os
import time
import uuid
from pathlib import Path

import pytest

from builds import services
from builds.models import Build, Status
from guests import services as guest_services
from tests.helpers import sample_settings
from tests.procs import manage, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def make_config(lab, user, name="guest", extra_module="", **overrides):
    """A configuration on the stand-in. Its host name is unique unless given,
    so its derivation is new and really builds (nix would reuse an output)."""
    overrides.setdefault("hostName", "t" + uuid.uuid4().hex[:12])
    return guest_services.configuration_create(
        lab=lab, name=name, settings=sample_settings(**overrides), extra_module=extra_module, user=user
    )


def finished(build: Build, timeout: float = 120) -> Build:
    def done():
        build.refresh_from_db()
        return build.is_terminal

    wait_for(done, timeout, what=f"build {build.pk} to finish")
    return build


def log_text(build: Build) -> str:
    # The job records the outcome first and compresses the log after it:
    # a fast database (PostgreSQL) shows the status before log.gz exists.
    path = build.workdir / "log.gz"
    wait_for(path.exists, 30, what=f"{path} to be written")
    with gzip.open(path, "rt") as fh:
        return fh.read()


def test_build_succeeds_and_records_everything(client_for, users, lab, workers):
    config = make_config(lab, users["operator"], hostName="builder")
    workers()
    client = client_for(users["operator"])
    resp = client.post(f"/labs/{lab.slug}/configs/{config.pk}/r/1/build/")
    assert resp.status_code == 302
    build = finished(Build.objects.get())
    assert build.status == Status.SUCCEEDED, build.error
    assert build.created_by == users["operator"] and build.exit_code == 0
    assert build.drv_path.endswith(".drv") and build.out_path.startswith("/nix/store/")
    assert build.duration.total_seconds() > 0
    # The closure size is measured right after the result is recorded.
    wait_for(lambda: Build.objects.get(pk=build.pk).closure_size, 30, what="the closure size")
    build.refresh_from_db()
    assert build.closure_size > 0
    spec = build.bootspec
    assert spec["init"].startswith(build.out_path) and spec["initrd"].startswith(build.out_path)
    # kernelParams: none, as upstream's imageless backend (the launcher passes root=tmpfs and init=).
    assert spec["toplevel"] == build.out_path and spec["kernelParams"] == []
    # GC root: the out-link keeps the output alive until the build is deleted.
    assert os.path.realpath(build.workdir / "result") == build.out_path
    assert '"nixos-flake"' in build.flake_lock  # the exact inputs this build used
    text = log_text(build)
    assert "kdevweb: succeeded" in text and text.count("\n") == build.log_lines
    page = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/{build.pk}/").content.decode()
    for field in (build.out_path, build.drv_path, spec["init"], "succeeded"):
        assert field in page
    raw = client.get(f"/labs/{lab.slug}/builds/{build.pk}/log/")
    assert gzip.decompress(b"".join(raw.streaming_content)).decode() == text


def test_failure_is_recorded_with_an_excerpt(users, lab, workers):
    config = make_config(lab, users["operator"], extra_module="{ standin.failBuild = true; }")
    workers()
    build = finished(services.build_start(revision=config.latest, user=users["operator"]))
    assert build.status == Status.FAILED and build.exit_code not in (0, None)
    assert "failing the build on purpose" in build.error
    assert not build.out_path


def test_cancel_a_queued_build_and_retry(client_for, users, lab, workers):
    config = make_config(lab, users["operator"])
    client = client_for(users["operator"])
    client.post(f"/labs/{lab.slug}/configs/{config.pk}/r/1/build/")
    client.post(f"/labs/{lab.slug}/configs/{config.pk}/r/1/build/")
    first, second = Build.objects.order_by("pk")
    page = client.get(f"/labs/{lab.slug}/builds/{second.pk}/").content.decode()
    assert "position 2 in the queue" in page
    client.post(f"/labs/{lab.slug}/builds/{first.pk}/cancel/")
    first.refresh_from_db()
    assert first.status == Status.CANCELLED
    resp = client.post(f"/labs/{lab.slug}/builds/{first.pk}/retry/")
    retry = Build.objects.get(retry_of=first)
    assert resp.status_code == 302 and retry.status == Status.QUEUED
    workers("--burst")
    assert finished(retry).status == Status.SUCCEEDED
    assert finished(second).status == Status.SUCCEEDED
    first.refresh_from_db()
    assert first.status == Status.CANCELLED  # the worker skipped it


def test_cancel_a_running_build_kills_nix(users, lab, workers):
    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 60; }")
    workers()
    build = services.build_start(revision=config.latest, user=users["operator"])
    wait_for(lambda: "sleeping" in _plain_log(build), 60, what="the build to be running")
    services.build_cancel(build=build)
    build = finished(build, timeout=30)
    assert build.status == Status.CANCELLED
    assert "cancel requested" in log_text(build)


def _plain_log(build: Build) -> str:
    path = Path(build.workdir) / "log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_timeout_is_a_setting(users, lab, workers):
    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 60; }")
    workers(BUILD_TIMEOUT="3")
    build = finished(services.build_start(revision=config.latest, user=users["operator"]), timeout=60)
    assert build.status == Status.FAILED and "Timed out after 3 s" in build.error


def test_two_builds_of_one_revision_at_once(users, lab, workers):
    from rq import Worker

    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 3; }")
    workers()
    workers()
    queue = services.build_queue()
    wait_for(lambda: len(Worker.all(queue=queue)) == 2, 30, what="both workers to listen")
    a = services.build_start(revision=config.latest, user=users["operator"])
    b = services.build_start(revision=config.latest, user=users["operator"])
    assert finished(a).status == Status.SUCCEEDED, a.error
    assert finished(b).status == Status.SUCCEEDED, b.error
    assert a.out_path == b.out_path and a.worker != b.worker
    # They really ran at the same time (nix's store locks serialised the work).
    assert a.nix_started < b.finished and b.nix_started < a.finished


def test_killed_worker_means_lost_then_retry_succeeds(users, lab, workers, tmp_path):
    config = make_config(lab, users["operator"], extra_module="{ standin.buildSeconds = 8; }")
    worker = workers()
    reaper = manage(["buildreaper", "--interval", "1"], log=tmp_path / "reaper.log", BUILD_LOST_AFTER="15")
    try:
        build = services.build_start(revision=config.latest, user=users["operator"])
        wait_for(lambda: "sleeping" in _plain_log(build), 60, what="the build to be running")
        worker.kill9()
        killed_at = time.monotonic()
        build = finished(build, timeout=60)
        assert build.status == Status.LOST and time.monotonic() - killed_at < 60
        assert "stopped responding" in build.error
    finally:
        reaper.stop()
    # nix died with its work horse (PDEATHSIG), so nothing half-built is
    # left running; a retry on a new worker builds it from scratch.
    workers()
    retry = finished(services.build_retry(build=build, user=users["operator"]), timeout=120)
    assert retry.status == Status.SUCCEEDED, retry.error


def test_compare_shows_revision_diff_and_closure_diff(client_for, users, lab, workers):
    config = make_config(lab, users["operator"])
    guest_services.revision_create(configuration=config, settings=sample_settings(hostName="other-host",
                                   extraPackages=[["fio"]]), extra_module="", message="", user=users["operator"])
    workers()
    a = finished(services.build_start(revision=config.revisions.get(number=1), user=users["operator"]))
    b = finished(services.build_start(revision=config.revisions.get(number=2), user=users["operator"]))
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/compare/?a={a.pk}&b={b.pk}")
    text = resp.content.decode()
    assert '+  &quot;hostName&quot;: &quot;other-host&quot;,' in text
    assert "fio" in text and 'id="diff-closures"' in text
