"""Evaluate every new revision with `nix eval`, in an RQ job, after its save.

A saved revision shows "evaluating" until its job records what nix said
("evaluates" or the error), usually within seconds. The job runs in the
build workers (`manage.py buildworker`) but from its own queue, which the
workers take first: an evaluation should not wait behind a long build.

Revisions get their job from a post_save hook (connected in apps.py) rather
than from each service that creates them (create, edit, clone, restore), so
no path that adds a revision can forget it; it is queued on commit, so the
worker always sees the row.
"""

import logging

import django_rq
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from rq import Queue

from . import flake
from .evaluate import DEFAULT_TIMEOUT, evaluate
from .models import EvalStatus, Revision

log = logging.getLogger(__name__)

EVAL_QUEUE = "evaluate"


def eval_queue() -> Queue:
    """The evaluation queue, on the same Redis as the build queue. A plain
    RQ queue: django_rq's own class wants every queue named in RQ_QUEUES."""
    return Queue(EVAL_QUEUE, connection=django_rq.get_connection("default"))


def eval_timeout() -> float:
    """Seconds nix eval may take (settings.EVAL_TIMEOUT, else the default)."""
    return float(getattr(settings, "EVAL_TIMEOUT", DEFAULT_TIMEOUT))


def revision_evaluate(revision_id: int) -> str:
    """RQ entry point: evaluate one revision and record the outcome."""
    close_old_connections()
    rev = Revision.objects.filter(pk=revision_id).only("files", "settings").first()
    if rev is None:
        return "skipped: revision deleted"
    timeout = eval_timeout()
    try:
        result = evaluate(rev.files, output=flake.output_name(rev.backend), offline=settings.NIX_OFFLINE,
                          timeout=timeout)
        status, error, drv = (EvalStatus.OK if result.ok else EvalStatus.ERROR), result.error, result.drv_path
    except Exception as exc:  # nix missing, disk full: say so on the page, not only in a worker log
        log.exception("evaluating revision %s", revision_id)
        status, error, drv = EvalStatus.ERROR, f"kdevweb could not run nix eval: {exc}", ""
    Revision.objects.filter(pk=revision_id).update(
        eval_status=status, eval_error=error, eval_drv_path=drv, eval_finished=timezone.now())
    return status


def evaluate_enqueue(revision_id: int) -> None:
    try:
        eval_queue().enqueue("guests.eval_jobs.revision_evaluate", revision_id,
                             job_id=f"evaluate-{revision_id}", job_timeout=eval_timeout() + 60,
                             result_ttl=600, failure_ttl=86400)
    except Exception as exc:  # Redis down: the revision is saved; say why it has no verdict
        # "not evaluated", not "does not evaluate": nothing is known about the files.
        log.error("could not queue the evaluation of revision %s: %s", revision_id, exc)
        Revision.objects.filter(pk=revision_id).update(
            eval_status=EvalStatus.NONE, eval_finished=timezone.now(),
            eval_error=f"Could not queue the evaluation: the queue (Redis) is unreachable ({exc}).")


def on_revision_saved(sender, instance: Revision, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        transaction.on_commit(lambda: evaluate_enqueue(instance.pk))
