"""Starting, cancelling, retrying and reaping builds.

Enqueueing happens on commit, so a worker never picks up a job whose Build
row it cannot see yet. Cancellation of a running build is cooperative: the
job polls `cancel_requested` and kills its own nix process group, which
works for every kind of RQ worker and on any host.
"""

import logging
import shutil
import uuid
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from guests import flake
from guests.models import Revision

from . import scheduling
from .models import ACTIVE, Build, Status

log = logging.getLogger(__name__)


def build_queue():
    return django_rq.get_queue("default")


def _enqueue(build_id: int, *, job_id: str | None = None) -> None:
    """Enqueue a run token (builds/scheduling.py: the worker runs the fairest
    eligible build, not necessarily this one)."""
    # RQ's own timeout is a backstop only: the job enforces BUILD_TIMEOUT
    # itself, so that it can kill nix and record why.
    try:
        build_queue().enqueue(
            "builds.jobs.build_run",
            build_id,
            job_id=job_id or f"build-{build_id}",
            job_timeout=settings.BUILD_TIMEOUT + 120,
            result_ttl=3600,
            failure_ttl=86400,
        )
    except Exception as exc:  # Redis unreachable: say so on the build, not with a 500
        log.error("could not enqueue build %s: %s", build_id, exc)
        if job_id is None:
            build_finish(build_id=build_id, status=Status.FAILED, error=(
                f"Could not queue the build: the queue (Redis) is unreachable ({exc}). Retry later."))


def build_wake() -> None:
    """A slot may have freed: one more token while builds wait."""
    waiting = Build.objects.filter(status=Status.QUEUED).order_by("created", "id").values_list("pk", flat=True).first()
    if waiting is not None:
        _enqueue(waiting, job_id=f"build-{waiting}-{uuid.uuid4().hex[:8]}")


def build_start(*, revision: Revision, user, retry_of: Build | None = None) -> Build:
    """Create a queued Build of ``revision`` and enqueue its job on commit."""
    with transaction.atomic():
        build = Build.objects.create(
            lab=revision.configuration.lab,
            revision=revision,
            created_by=user,
            retry_of=retry_of,
            attr=flake.output_name(revision.backend),
        )
        transaction.on_commit(lambda: _enqueue(build.pk))
    return build


def build_retry(*, build: Build, user) -> Build:
    return build_start(revision=build.revision, user=user, retry_of=build)


def build_finish(
    *, build_id: int, status: str, from_lost: bool = False, only_from: set[str] | None = None, wake: bool = True,
    **fields,
) -> bool:
    """Move a build to a terminal status unless it already is in one.

    Returns False when another party (cancel, reaper) finished it first, so
    the outcome is recorded exactly once. The job itself passes
    ``from_lost``: a build the reaper gave up on (a stalled heartbeat) that
    did finish after all gets its real outcome. ``wake=False``: the caller
    calls :func:`build_wake` itself (the job does, once its log is stored).
    """
    now = timezone.now()
    allowed = only_from or (ACTIVE | {Status.LOST} if from_lost else ACTIVE)
    updated = Build.objects.filter(pk=build_id, status__in=allowed).update(status=status, finished=now, **fields)
    if updated:
        from .stream import publish_status

        publish_status(build_id)
        if wake:
            transaction.on_commit(build_wake)
    return bool(updated)


def build_cancel(*, build: Build) -> None:
    """Cancel a queued build now; ask a running one's job to stop its nix.

    Both are conditional updates, so a worker claiming the build at the same
    moment either sees it cancelled (and skips it) or owns it (and is asked).
    """
    if build_finish(build_id=build.pk, status=Status.CANCELLED, only_from={Status.QUEUED}):
        return  # its token stays queued and runs whatever is fairest then
    Build.objects.filter(pk=build.pk, status=Status.RUNNING).update(cancel_requested=True)


def build_delete(*, build: Build) -> None:
    """Delete a finished build: its row, log and out-link (the GC root that
    kept its output alive; `nix-collect-garbage` may then reclaim it)."""
    if not build.is_terminal:
        raise ValueError("Cancel the build before deleting it.")
    if build.status == Status.LOST and build.heartbeat and (
        timezone.now() - build.heartbeat
    ).total_seconds() < settings.BUILD_LOST_AFTER:
        raise ValueError("Its worker was heard from moments ago; wait before deleting it.")
    workdir = build.workdir
    build.delete()
    shutil.rmtree(workdir, ignore_errors=True)


def queue_position(build: Build) -> int | None:
    """1-based position of a queued build in the fair order, or None."""
    return scheduling.queue_position(build)


def builds_reap(*, now=None) -> list[int]:
    """Mark `lost` the builds whose worker died.

    A running build whose heartbeat is older than BUILD_LOST_AFTER lost its
    worker (kill -9, machine reboot). A queued build whose RQ job no longer
    exists (Redis lost its data) would wait forever. Returns the ids reaped.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.BUILD_LOST_AFTER)
    reaped = []
    running = Build.objects.filter(status=Status.RUNNING, heartbeat__lt=stale).values_list("pk", flat=True)
    for pk in running:
        if build_finish(build_id=pk, status=Status.LOST, error="The worker running this build stopped responding."):
            reaped.append(pk)
    # Builds wait without a job of their own (tokens, builds/scheduling.py).
    # Waiting builds and no job queued (Redis lost its data, or a token was
    # dropped): add one, rather than leave them waiting forever.
    if Build.objects.filter(status=Status.QUEUED, created__lt=stale).exists() and build_queue().count == 0:
        log.warning("builds are waiting but no job is queued: adding one")
        build_wake()
    if reaped:
        log.warning("reaped lost builds: %s", reaped)
    return reaped
