"""Read-only queries for the build pages (HackSoft-style selectors)."""

from datetime import date
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from guests.models import Configuration, Lab, Revision

from .models import Build


def build_get(*, lab: Lab, build_id: int) -> Build:
    qs = Build.objects.select_related("revision__configuration", "created_by", "retry_of")
    return get_object_or_404(qs, lab=lab, pk=build_id)


def builds_by_id(*, lab: Lab, ids: list[int]) -> dict[int, Build]:
    qs = Build.objects.filter(lab=lab).select_related("revision__configuration", "created_by")
    return qs.in_bulk(ids)


def build_list(*, lab: Lab, configuration: Configuration | None = None, status: str = "", who: str = "",
               since: date | None = None, until: date | None = None) -> QuerySet[Build]:
    """A lab's builds, newest first. ``who`` matches part of the username,
    in any case (people remember "adm", not "Admin")."""
    qs = Build.objects.filter(lab=lab).select_related("revision__configuration", "created_by")
    if configuration is not None:
        qs = qs.filter(revision__configuration=configuration)
    if status:
        qs = qs.filter(status=status)
    if who:
        qs = qs.filter(created_by__username__icontains=who)
    if since:
        qs = qs.filter(created__date__gte=since)
    if until:
        qs = qs.filter(created__date__lte=until)
    return qs.order_by("-created", "-id")


def build_states(*, lab: Lab, ids: list[int]) -> QuerySet[Build]:
    """Just enough of some builds to refresh their history rows."""
    return Build.objects.filter(lab=lab, pk__in=ids[:200]).only(
        "id", "status", "started", "finished", "progress", "lab_id")


def build_trend(*, configuration: Configuration, limit: int = 200) -> list[Build]:
    """The configuration's latest finished builds, oldest first."""
    builds = (Build.objects.filter(revision__configuration=configuration)
              .exclude(started=None).exclude(finished=None)
              .filter(status__in=["succeeded", "failed"])
              .select_related("revision").order_by("-finished", "-id")[:limit])
    return list(builds)[::-1]


def configurations_with_last_build(*, lab: Lab) -> list[Configuration]:
    """The lab's configurations, each with ``latest_rev`` and ``last_build``
    (or None), in a constant number of queries."""
    last = Build.objects.filter(revision__configuration=OuterRef("pk")).order_by("-created", "-id")
    newest = Revision.objects.filter(configuration=OuterRef("pk")).order_by("-number")
    configs: list[Any] = list(lab.configurations.annotate(last_build_id=Subquery(last.values("pk")[:1]),
                                               latest_rev_id=Subquery(newest.values("pk")[:1])))
    builds = Build.objects.in_bulk([c.last_build_id for c in configs if c.last_build_id])
    revisions = Revision.objects.defer("files", "extra_module").in_bulk(
        [c.latest_rev_id for c in configs if c.latest_rev_id])
    for c in configs:
        c.last_build = builds.get(c.last_build_id)
        c.latest_rev = revisions.get(c.latest_rev_id)
    return configs


def labs_overview(*, user, labs) -> list[dict]:
    """For the home page: each lab with the user's role and its
    configurations' last builds."""
    from guests.models import Membership

    labs = list(labs)
    roles = dict(Membership.objects.filter(user=user, lab__in=labs).values_list("lab_id", "role"))
    rows = []
    for lab in labs:
        role = roles.get(lab.pk) or ("admin" if user.is_superuser else "")
        rows.append({"lab": lab, "role": role, "can_build": role in ("operator", "admin"),
                     "configurations": configurations_with_last_build(lab=lab)})
    return rows
