"""Which queued build runs next: fair across labs, at most
BUILDS_PER_LAB running per lab.

RQ jobs are tokens, not assignments: each build start (and each build
finish, while builds wait) enqueues one `build_run` job, and a worker that
picks a job runs the *fairest* eligible queued build. Fair order: a lab's
first waiting build comes before any lab's second, its second before any
third, and so on; ties by age. So an operator who queues 100 builds delays
another lab's next build by at most one build per lab, not by 100.
A job that finds nothing eligible (every waiting lab at its limit) ends; the
next finish in that lab enqueues another.
"""

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from guests.models import Lab

from .models import Build, Status


def fair_order() -> list[tuple[int, int]]:
    """Queued builds as (build id, lab id), in the order they would start."""
    queued = Build.objects.filter(status=Status.QUEUED).order_by("created", "id").values_list("pk", "lab_id")
    # A lab's running builds count as its first ones: a lab already building
    # goes behind labs that are not.
    seen: dict[int, int] = defaultdict(int, running_per_lab())
    ranked = []
    for age, (pk, lab_id) in enumerate(queued):
        ranked.append((seen[lab_id], age, pk, lab_id))
        seen[lab_id] += 1
    return [(pk, lab_id) for _, _, pk, lab_id in sorted(ranked)]


def running_per_lab() -> dict[int, int]:
    rows = Build.objects.filter(status=Status.RUNNING).values("lab_id").annotate(n=Count("id"))
    return {row["lab_id"]: row["n"] for row in rows}


def queue_position(build: Build) -> int | None:
    """1-based place of a queued build in the fair order (None once it runs).

    Honest about what is known: how many waiting builds start before it if
    no new build of a lab with fewer waiting builds arrives. A build whose
    lab is at its running limit is passed by other labs' builds meanwhile.
    """
    for i, (pk, _) in enumerate(fair_order(), 1):
        if pk == build.pk:
            return i
    return None


def lab_at_limit(build: Build) -> bool:
    return running_per_lab().get(build.lab_id, 0) >= settings.BUILDS_PER_LAB


def build_claim(*, worker: str) -> Build | None:
    """Mark the fairest eligible queued build running (for ``worker``) and return it.

    One claim at a time per lab: the lab row is locked (PostgreSQL) and
    SQLite's IMMEDIATE transactions serialise writers, so two workers never
    both take a lab's last free slot.
    """
    limit = settings.BUILDS_PER_LAB
    for pk, lab_id in fair_order():
        with transaction.atomic():
            Lab.objects.select_for_update().filter(pk=lab_id).first()
            if Build.objects.filter(lab_id=lab_id, status=Status.RUNNING).count() >= limit:
                continue
            now = timezone.now()
            if Build.objects.filter(pk=pk, status=Status.QUEUED).update(
                status=Status.RUNNING, started=now, heartbeat=now, worker=worker
            ):
                return Build.objects.select_related("revision").get(pk=pk)
        # Cancelled or claimed meanwhile: try the next one.
    return None
