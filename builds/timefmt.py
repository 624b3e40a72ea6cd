"""Times and durations as the pages print them (one format everywhere)."""

from datetime import datetime, timedelta

from django.utils import timezone


def absolute(value: datetime) -> str:
    """"2026-12-01 07:30:05 UTC" in the instance's time zone."""
    local = timezone.localtime(value)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "")


def ago(then: datetime, now: datetime | None = None) -> str:
    """"just now", "3 min ago", "2 h ago", "4 days ago" (static/kdevweb/times.js says the same)."""
    seconds = int(((now or timezone.now()) - then).total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    days = seconds // 86400
    return f"{days} day{'s' if days != 1 else ''} ago"


def duration(value: timedelta | float | None) -> str:
    """"42.1 s", "3 min 05 s", "1 h 02 min" (build.js's formatDuration matches)."""
    if value is None or value == "":
        return ""
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(int(round(total)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
