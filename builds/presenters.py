"""JSON views of a build, shared by the page, the websocket and the API."""

from typing import Any

from django.conf import settings

from . import bootspec, scheduling, timefmt
from .models import TERMINAL, Build, Status
from .services import queue_position


def _count(progress: dict, key: str) -> dict[str, int]:
    c = progress.get(key) or {}
    return {k: int(c.get(k) or 0) for k in ("done", "expected", "failed")}


def is_cache_hit(build: Build) -> bool:
    """Succeeded without building or fetching anything: the output was
    already in the store, so its duration is not a build time."""
    if build.status != Status.SUCCEEDED:
        return False
    progress = build.progress or {}
    builds, downloads = _count(progress, "builds"), _count(progress, "downloads")
    return not (builds["done"] or builds["expected"] or downloads["done"] or downloads["expected"])


def phase_label(build: Build) -> str:
    """What the build is doing, or how it ended. Nix's last stage is only
    meaningful while it runs: a failed build was not still "evaluating"."""
    progress = build.progress or {}
    if build.status == Status.QUEUED:
        return "waiting for a worker"
    if build.status == Status.RUNNING:
        if build.cancel_requested:
            return "cancelling"
        return progress.get("phase") or progress.get("stage") or "starting"
    if build.status == Status.SUCCEEDED:
        return "already built — nothing to do" if is_cache_hit(build) else "done"
    if build.status == Status.FAILED:
        stage = progress.get("stage")
        where = {"evaluating": "during evaluation", "building": "while building",
                 "downloading": "while downloading", "realising": "while realising"}.get(stage or "")
        return f"failed {where}" if where else "failed"
    if build.status == Status.CANCELLED:
        return "cancelled"
    return "lost: its worker stopped responding"


def counts(build: Build) -> dict[str, dict[str, int]]:
    """Derivation and download counters. Once a build has ended, nix's
    "expected" no longer means anything (a cancelled build's pending work
    vanishes from it), so only what was done is reported then."""
    progress = build.progress or {}
    result = {"builds": _count(progress, "builds"), "downloads": _count(progress, "downloads")}
    for c in result.values():
        c["expected"] = max(c["expected"], c["done"])
    return result


def counts_text(build: Build) -> str:
    c = counts(build)
    b, d = c["builds"], c["downloads"]
    if build.status in TERMINAL:
        text = f"{b['done']} built · {d['done']} fetched"
        if b["failed"]:
            text += f" · {b['failed']} failed"
        return text
    return f"builds {b['done']}/{b['expected']} · downloads {d['done']}/{d['expected']}"


def build_summary(build: Build) -> dict[str, Any]:
    """The build as the page and the websocket show it; queued builds also
    carry their position in the queue."""
    duration = build.duration
    summary = {
        "id": build.pk,
        "status": build.status,
        "status_label": build.get_status_display(),
        "terminal": build.status in TERMINAL,
        "revision": str(build.revision),
        "attr": build.attr,
        "created_by": build.created_by.username if build.created_by else None,
        "created": build.created.isoformat() if build.created else None,
        "started": build.started.isoformat() if build.started else None,
        "finished": build.finished.isoformat() if build.finished else None,
        "duration_s": round(duration.total_seconds(), 3) if duration else None,
        "duration_text": timefmt.duration(duration),
        # Pre-formatted so the live page prints exactly what a reload would.
        "times": {key: timefmt.absolute(value) if value else ""
                  for key, value in (("created", build.created), ("started", build.started),
                                     ("finished", build.finished))},
        "exit_code": build.exit_code,
        "error": build.error,
        "drv_path": build.drv_path,
        "out_path": build.out_path,
        "closure_size": build.closure_size,
        "bootspec": bootspec.ordered(build.bootspec),
        "flake_lock": build.flake_lock,
        "progress": build.progress,
        "phase": phase_label(build),
        "cache_hit": is_cache_hit(build),
        "counts": counts(build),
        "counts_text": counts_text(build),
        "log_lines": build.log_lines,
        "cancel_requested": build.cancel_requested,
    }
    if build.status == Status.QUEUED:
        summary["queue_position"] = position = queue_position(build)
        parts = [f"position {position} in the queue"] if position else []
        if scheduling.lab_at_limit(build):
            # Honest: other labs' builds start before it meanwhile.
            parts.append(f"waits for one of this lab's {settings.BUILDS_PER_LAB} running builds to finish")
        summary["queue_text"] = f"({'; '.join(parts)})" if parts else ""
    return summary
