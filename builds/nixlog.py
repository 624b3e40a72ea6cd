"""Fold Nix's ``--log-format internal-json`` stderr into UI events and state.

:class:`NixProgress` reads the stream line by line (wire format: see
:mod:`builds.nixevents`) and keeps the state Nix's own progress bar keeps:
live activities with their Progress counters, per-type totals of finished
ones, SetExpected announcements, the phase of each build. Each line becomes
a few small events (log lines, phases, activity start/stop, counter
changes); :meth:`NixProgress.snapshot` summarises the state for a status
panel, and :func:`error_excerpt` picks out why a build failed.

Pure: no I/O, no Django. Nothing in here raises on bad input.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from builds.nixevents import (
    LVL_ERROR,
    LVL_INFO,
    Act,
    ActivityEvent,
    Event,
    LogEvent,
    PhaseEvent,
    ProgressEvent,
    Res,
    activity_label,
    parse_line,
    store_path_name,
    strip_ansi,
)

__all__ = [
    "Act",
    "ActivityEvent",
    "Event",
    "LogEvent",
    "NixProgress",
    "PhaseEvent",
    "ProgressEvent",
    "Res",
    "activity_label",
    "error_excerpt",
    "parse_line",
    "store_path_name",
    "strip_ansi",
]

# Activities whose start/stop the UI cares about; file transfers and path-info
# queries are far too chatty (one per narinfo) to be worth an event each.
_NAMED_ACTIVITIES = (Act.BUILD, Act.SUBSTITUTE, Act.POST_BUILD_HOOK)
_BUILDER_FAILED_RE = re.compile(r"builder for '(/[^']+\.drv)' failed")
# The first errors are the cause; hundreds more (--keep-going) add nothing.
_MAX_ERRORS = 100


@dataclass
class _Activity:
    type: int
    name: str | None
    path: str | None
    phase: str | None = None
    done: int = 0
    expected: int = 0
    running: int = 0
    failed: int = 0
    expected_by_type: dict[int, int] = field(default_factory=dict)


@dataclass
class _TypeTotals:
    done: int = 0  # from stopped activities
    failed: int = 0  # from stopped activities
    expected: int = 0  # from SetExpected results of live activities


def _int(fields: list[Any], i: int) -> int | None:
    value = fields[i] if i < len(fields) else None
    # bool is an int in Python but never a valid counter.
    return value if type(value) is int else None


def _str(fields: list[Any], i: int) -> str | None:
    value = fields[i] if i < len(fields) else None
    return value if isinstance(value, str) else None


class NixProgress:
    """State machine over the internal-json stream of one nix invocation.

    Feed it stderr lines in order; it returns the events each line causes
    and keeps enough state for :meth:`snapshot` and :func:`error_excerpt`.
    """

    def __init__(self, tail_lines: int = 25, tail_builds: int = 64) -> None:
        """``tail_lines`` log lines are kept for each of the last
        ``tail_builds`` builds, to explain a failure afterwards."""
        self._acts: dict[int, _Activity] = {}
        self._totals: dict[int, _TypeTotals] = {}
        self._tail_lines = tail_lines
        self._tail_builds = tail_builds
        self._tails: OrderedDict[str, deque[str]] = OrderedDict()
        self._realising = 0
        self._realised = False
        self._last_progress: ProgressEvent | None = None
        self.error_messages: list[str] = []
        self.failed_drvs: list[str] = []
        # Last lines of any kind, for explaining a run that ended without
        # an error message (killed, crashed).
        self.recent_lines: deque[str] = deque(maxlen=tail_lines)
        self.error_lines = 0
        self.log_lines = 0

    # -- input -------------------------------------------------------------

    def feed(self, line: str) -> list[Event]:
        """Consume one stderr line (trailing newline optional)."""
        line = line.rstrip("\r\n")
        obj = parse_line(line)
        try:
            events = self._dispatch(obj) if obj is not None else []
        except Exception:  # noqa: BLE001 - an odd line must not take a build down
            obj, events = None, []
        if obj is None:
            self.log_lines += 1
            events = [LogEvent(text=line, source="plain")]
        for event in events:
            if isinstance(event, LogEvent):
                self.recent_lines.append(f"{event.drv}> {event.text}" if event.source == "build" else event.text)
        progress = self._progress_event()
        if progress is not None:
            events.append(progress)
        return events

    def _dispatch(self, obj: dict[str, Any]) -> list[Event]:
        action = obj["action"]
        fields = obj.get("fields")
        fields = fields if isinstance(fields, list) else []
        act_id = obj.get("id")
        if action == "msg":
            return self._msg(obj)
        if not isinstance(act_id, int):
            return []
        if action == "start":
            return self._start(act_id, obj, fields)
        if action == "stop":
            return self._stop(act_id)
        if action == "result":
            return self._result(act_id, obj.get("type"), fields)
        return []  # an action from a newer Nix: ignore rather than guess

    def _msg(self, obj: dict[str, Any]) -> list[Event]:
        text = obj.get("msg")
        level = obj.get("level")
        if not isinstance(text, str):
            return []
        level = level if isinstance(level, int) else LVL_INFO
        error = level == LVL_ERROR
        if error:
            if len(self.error_messages) < _MAX_ERRORS:
                self.error_messages.append(text)
            match = _BUILDER_FAILED_RE.search(strip_ansi(text))
            if match and match.group(1) not in self.failed_drvs:
                self.failed_drvs.append(match.group(1))
        # One event per line: a log view wants lines, and eval errors come
        # with a multi-line code frame.
        events: list[Event] = []
        for part in text.split("\n"):
            self.log_lines += 1
            self.error_lines += error
            events.append(LogEvent(text=part, source="msg", level=level, error=error))
        return events

    def _start(self, act_id: int, obj: dict[str, Any], fields: list[Any]) -> list[Event]:
        raw_type = obj.get("type")
        act_type = raw_type if type(raw_type) is int else int(Act.UNKNOWN)
        path = _str(fields, 0) if act_type in (Act.BUILD, Act.SUBSTITUTE, Act.COPY_PATH, Act.POST_BUILD_HOOK) else None
        act = _Activity(type=act_type, path=path, name=store_path_name(path) if path else None)
        self._acts[act_id] = act
        if act_type == Act.REALISE:
            self._realising += 1
        if act_type == Act.BUILD and path:
            self._tails[path] = deque(maxlen=self._tail_lines)
            while len(self._tails) > self._tail_builds:
                self._tails.popitem(last=False)
        events: list[Event] = []
        text, level = obj.get("text"), obj.get("level")
        # Same rule as the nix CLI: show start texts up to INFO ("building ...",
        # "copying path ..."); the rest are debug noise.
        if isinstance(text, str) and text and isinstance(level, int) and level <= LVL_INFO:
            self.log_lines += 1
            events.append(LogEvent(text=text, source="activity", level=level, drv=act.name, activity=act_id))
        if act_type in _NAMED_ACTIVITIES:
            events.append(ActivityEvent("start", act_id, activity_label(act_type), act.name))
        return events

    def _stop(self, act_id: int) -> list[Event]:
        act = self._acts.pop(act_id, None)
        if act is None:
            return []
        totals = self._totals.setdefault(act.type, _TypeTotals())
        totals.done += act.done
        totals.failed += act.failed
        # Its SetExpected promises die with it (as in nix's progress bar).
        for exp_type, expected in act.expected_by_type.items():
            self._totals.setdefault(exp_type, _TypeTotals()).expected -= expected
        if act.type == Act.REALISE:
            self._realising = max(0, self._realising - 1)
            self._realised = True
        if act.type in _NAMED_ACTIVITIES:
            return [ActivityEvent("stop", act_id, activity_label(act.type), act.name)]
        return []

    def _result(self, act_id: int, res_type: Any, fields: list[Any]) -> list[Event]:
        act = self._acts.get(act_id)
        if res_type in (Res.BUILD_LOG_LINE, Res.POST_BUILD_LOG_LINE):
            return self._log_line(act_id, act, res_type, _str(fields, 0))
        if act is None:
            return []
        if res_type == Res.SET_PHASE:
            phase = _str(fields, 0)
            if phase is None:
                return []
            act.phase = phase
            return [PhaseEvent(activity=act_id, drv=act.name, phase=phase)]
        if res_type == Res.PROGRESS:
            values = [_int(fields, i) for i in range(4)]
            if all(v is not None for v in values):
                act.done, act.expected, act.running, act.failed = values  # type: ignore[assignment]
        elif res_type == Res.SET_EXPECTED and _int(fields, 0) is not None and _int(fields, 1) is not None:
            # A new value replaces this activity's previous one for that type.
            exp_type, expected = fields[0], fields[1]
            totals = self._totals.setdefault(exp_type, _TypeTotals())
            totals.expected += expected - act.expected_by_type.get(exp_type, 0)
            act.expected_by_type[exp_type] = expected
        return []

    def _log_line(self, act_id: int, act: _Activity | None, res_type: int, text: str | None) -> list[Event]:
        if text is None:
            return []
        self.log_lines += 1
        name = act.name if act else None
        if act and act.path and act.path in self._tails:
            self._tails[act.path].append(text)
        source = "build" if res_type == Res.BUILD_LOG_LINE else "post-build"
        return [LogEvent(text=text, source=source, drv=name, activity=act_id)]

    # -- derived state -----------------------------------------------------

    def counters(self, act_type: int) -> dict[str, int]:
        """done/expected/running/failed for one activity type, summed like
        nix's progress bar: finished activities plus live ones, with
        ``expected`` raised to what SetExpected announced."""
        totals = self._totals.get(act_type, _TypeTotals())
        live = [a for a in self._acts.values() if a.type == act_type]
        done = totals.done + sum(a.done for a in live)
        expected = max(totals.done + sum(a.expected for a in live), totals.expected)
        return {
            "done": done,
            "expected": expected,
            "running": sum(a.running for a in live),
            "failed": totals.failed + sum(a.failed for a in live),
        }

    def stage(self) -> str:
        """Coarse state: evaluating, realising, downloading, building, finishing."""
        if not self._realising:
            # After the (last) realisation nix only writes out-links and exits.
            return "finishing" if self._realised else "evaluating"
        types = {a.type for a in self._acts.values()}
        if Act.BUILD in types:
            return "building"
        if types & {Act.SUBSTITUTE, Act.COPY_PATH}:
            return "downloading"
        return "realising"

    def tail(self, drv_path: str) -> list[str]:
        """Last log lines kept for a derivation's build (empty if unknown)."""
        return list(self._tails.get(drv_path, ()))

    def _live(self, act_type: int) -> list[_Activity]:
        return [a for a in self._acts.values() if a.type == act_type and a.name]

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable summary for a status panel."""
        builds = self._live(Act.BUILD)
        phased = [a.phase for a in builds if a.phase]
        copy_bytes = self.counters(Act.COPY_PATH)
        dl_bytes = self.counters(Act.FILE_TRANSFER)
        return {
            "stage": self.stage(),
            # Phase of the most recently started build that reported one.
            "phase": phased[-1] if phased else None,
            "builds": self.counters(Act.BUILDS),
            "downloads": self.counters(Act.COPY_PATHS),
            "copy_bytes": {"done": copy_bytes["done"], "expected": copy_bytes["expected"]},
            "download_bytes": {"done": dl_bytes["done"], "expected": dl_bytes["expected"]},
            "current": [a.name for a in builds],
            "phases": {a.name: a.phase for a in builds if a.phase},
            "substituting": [a.name for a in self._live(Act.SUBSTITUTE)],
            "failed": [store_path_name(p) for p in self.failed_drvs],
            "error_lines": self.error_lines,
            "log_lines": self.log_lines,
        }

    def _progress_event(self) -> ProgressEvent | None:
        event = ProgressEvent(
            stage=self.stage(), builds=self.counters(Act.BUILDS), downloads=self.counters(Act.COPY_PATHS)
        )
        if event == self._last_progress:
            return None
        self._last_progress = event
        return event


_NOISE = ("(use '--show-trace' to show detailed location information)",)


def _budget(errors: list[str], tails: list[str], limit: int) -> tuple[list[str], list[str]]:
    """Share ``limit`` lines: the first errors (the cause; later ones are
    consequences) and the last log lines (where builds print their error)."""
    if len(errors) + len(tails) <= limit:
        return errors, tails
    keep_tail = min(len(tails), max(limit - len(errors), limit // 2))
    keep_err = limit - keep_tail
    return errors[:keep_err], tails[len(tails) - keep_tail :] if keep_tail else []


def error_excerpt(lines: Iterable[str] | NixProgress, limit: int = 40) -> str:
    """The part of a failed nix run's stderr a person needs, ANSI stripped.

    That is the ``error:`` messages plus the last log lines of each
    derivation whose builder failed (prefixed ``name> `` like ``nix -L``),
    ``limit`` lines at most plus a blank separator. Without any error message
    (killed, crashed) it falls back to the last lines of whatever text there
    was. Give it the raw stderr lines, or the NixProgress that already saw
    them (which keeps its own, shorter, tails).
    """
    if isinstance(lines, NixProgress):
        progress = lines
    else:
        progress = NixProgress(tail_lines=limit)
        for line in lines:
            progress.feed(line)
    errors = [
        part
        for msg in progress.error_messages
        for part in strip_ansi(msg).rstrip().split("\n")
        if part.strip() not in _NOISE
    ]
    tails = [
        f"{store_path_name(drv)}> {strip_ansi(text)}" for drv in progress.failed_drvs for text in progress.tail(drv)
    ]
    if not errors and not tails:
        recent = [strip_ansi(line) for line in progress.recent_lines if line.strip()]
        return "\n".join(recent[-limit:])
    errors, tails = _budget(errors, tails, limit)
    return "\n".join(errors + ([""] + tails if tails else []))
