"""Run an RQ worker for builds (a resident process; RQ forks per job)."""

from django.core.management.base import BaseCommand
from django_rq import get_worker
from rq import Queue

# Imported here, in the resident worker, so that each forked work horse has
# the job code (nix runner, log parser, channel layer) already loaded:
# importing it per job cost ~30 ms of every build's start.
import builds.jobs  # noqa: F401,E402
import guests.eval_jobs  # noqa: F401,E402


class Command(BaseCommand):
    help = "Run the build worker."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
        parser.add_argument("--simple", action="store_true", help="run jobs in-process (no fork)")

    def handle(self, *args, burst, simple, **options):
        worker_class = "rq.worker.SimpleWorker" if simple else None
        kwargs = {"worker_class": worker_class} if worker_class else {}
        worker = get_worker("default", **kwargs)
        # Revision evaluations (seconds) first, then builds: see guests.eval_jobs.
        worker = type(worker)([guests.eval_jobs.eval_queue(), *worker.queues], connection=worker.connection,
                              job_class=worker.job_class, queue_class=Queue)
        worker.work(burst=burst, with_scheduler=False)
