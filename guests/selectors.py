"""Read-only queries for the guest pages and their websocket."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from builds import timefmt
from builds.models import Build, Status

from .models import Configuration, Lab
from .vm_models import ACTIVE_STATES, Guest, GuestEvent, Host, Kernel

# Which buttons make sense in which state (the services decide; this only hides the rest).
BUTTONS = {
    "start": {"defined", "stopped", "crashed", "failed"},
    "stop": {"running", "starting"},
    "force-off": {"running", "starting", "stopping"},
    "reboot": {"running"},
    "rollback": {"defined", "stopped", "crashed", "failed"},
    "rollback-restart": {"running"},
    "delete": {"defined", "stopped", "crashed", "failed", "running", "starting", "stopping"},
}


def _guests() -> QuerySet[Guest]:
    return Guest.objects.select_related("host", "kernel", "configuration", "build__revision", "started_by",
                                        "created_by")


def guest_list(*, lab: Lab) -> QuerySet[Guest]:
    return _guests().filter(lab=lab)


def guest_get(*, lab: Lab, guest_id: int) -> Guest:
    return get_object_or_404(_guests(), lab=lab, pk=guest_id)


def guest_events(*, guest: Guest, limit: int = 50) -> list[GuestEvent]:
    # A libvirt guest's defined domain XML is kept as an event for its page's XML panel, not the timeline.
    return list(guest.events.exclude(kind="domain xml").select_related("user")[:limit])


def succeeded_builds(*, lab: Lab, configuration: Configuration | None = None) -> QuerySet[Build]:
    qs = Build.objects.filter(lab=lab, status=Status.SUCCEEDED).exclude(out_path="").select_related(
        "revision__configuration")
    if configuration is not None:
        qs = qs.filter(revision__configuration=configuration)
    return qs.order_by("-created", "-id")


def latest_succeeded(*, configuration: Configuration) -> Build | None:
    return succeeded_builds(lab=configuration.lab, configuration=configuration).first()


def hosts() -> QuerySet[Host]:
    return Host.objects.all()


def kernels() -> QuerySet[Kernel]:
    return Kernel.objects.select_related("host", "added_by")


def memory_in_use(*, host: Host) -> int:
    return sum(Guest.objects.filter(host=host, state__in=ACTIVE_STATES).values_list("memory_mib", flat=True))


def _time(value) -> dict[str, str] | None:
    if not value:
        return None
    return {"iso": value.isoformat(), "text": timefmt.absolute(value), "ago": timefmt.ago(value)}


def guest_summary(guest: Guest, *, events: bool = False) -> dict[str, Any]:
    """The whole visible state of a guest: each websocket message carries
    all of it, so a lost message cannot leave a page stale."""
    build = guest.build
    data: dict[str, Any] = {
        "id": guest.pk,
        "name": guest.name,
        "state": guest.state,
        "pending": guest.pending_action,
        "host": guest.host.name,
        "kernel": str(guest.kernel),
        "configuration": guest.configuration.name,
        "revision": build.revision.number,
        "build": build.pk,
        "accel": guest.accel,
        "ssh_port": guest.ssh_port if guest.active else None,
        "started_by": guest.started_by.username if guest.started_by else "",
        "started": _time(guest.started) if guest.state == "running" else None,
        "stopped": _time(guest.stopped),
        "exit_text": guest.exit_text,
        "error": guest.error,
        "stderr_tail": guest.stderr_tail,
        "serial_tail": guest.serial_tail,
        "buttons": sorted(name for name, states in BUTTONS.items() if guest.state in states),
    }
    if events:
        data["events"] = [
            {"time": _time(e.time), "who": e.user.username if e.user else e.source, "kind": e.kind,
             "state": e.state, "text": e.text}
            for e in guest_events(guest=guest)
        ]
    return data
