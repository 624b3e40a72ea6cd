"""JSON views of a build, shared by the page, the websocket and the API."""

from typing import Any

from .models import TERMINAL, Build, Status
from .services import queue_position


def build_summary(build: Build) -> dict[str, Any]:
    """The build as the page and the websocket show it; queued builds also
    carry their position in the queue."""
    duration = build.duration
    summary = {
        "id": build.pk,
        "status": build.status,
        "terminal": build.status in TERMINAL,
        "revision": str(build.revision),
        "attr": build.attr,
        "created_by": build.created_by.username if build.created_by else None,
        "created": build.created.isoformat() if build.created else None,
        "started": build.started.isoformat() if build.started else None,
        "finished": build.finished.isoformat() if build.finished else None,
        "duration_s": round(duration.total_seconds(), 3) if duration else None,
        "exit_code": build.exit_code,
        "error": build.error,
        "drv_path": build.drv_path,
        "out_path": build.out_path,
        "closure_size": build.closure_size,
        "bootspec": build.bootspec,
        "progress": build.progress,
        "phase": (build.progress or {}).get("phase") or (build.progress or {}).get("stage") or "–",
        "log_lines": build.log_lines,
        "cancel_requested": build.cancel_requested,
    }
    if build.status == Status.QUEUED:
        summary["queue_position"] = queue_position(build)
    return summary
