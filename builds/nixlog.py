"""Fold Nix's ``--log-format internal-json`` stderr into UI events and state.

:class:`NixProgress` reads the stream line by line (wire format: see
:mod:`builds.nixevents`) and keeps the state Nix's own progress bar keeps:
live activities with their Progress counters, per-type totals of finished
ones, SetExpected announcements, the phase of each build. Each line becomes
a few small events (log lines, phases, activity start/stop, counter
changes); :meth:`NixProgress.snapshot` summarises the state for a status
panel, and :func:`error_excerpt` picks out why a build failed.

Read against Nix 2.8 to 2.3x, with or without a nix-daemon: what differs
between them (failure wording, daemon messages at level 0, build goals
outliving their builds) is handled here and in :mod:`builds.nixexcerpt`.

Pure: no I/O, no Django. Nothing in here raises on bad input: ``feed()``
keeps any line it cannot read as text.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from builds import nixexcerpt
from builds.nixevents import (
    LVL_INFO,
    Act,
    ActivityEvent,
    Event,
    LogEvent,
    PhaseEvent,
    ProgressEvent,
    Res,
    activity_label,
    clean_text,
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
    progressed: bool = False  # has reported Progress at least once
    seen: int = 0  # number of the last line that showed it alive
    finished: bool = False  # a build whose failure was reported but that has not stopped


@dataclass
class _TypeTotals:
    done: int = 0  # from stopped activities
    failed: int = 0  # from stopped activities
    # What stopped activities had promised (at least what they did). Nix's
    # own bar counts only their ``done``, so a failed build's "2 expected"
    # vanishes with its activity ("0/0, 1 failed"); nix's bar is gone by
    # then, but ours is the record of the build.
    settled: int = 0
    expected: int = 0  # from SetExpected results of live activities


def _int(fields: list[Any], i: int) -> int | None:
    value = fields[i] if i < len(fields) else None
    # bool is an int in Python but never a valid counter.
    return value if type(value) is int else None


def _str(fields: list[Any], i: int) -> str | None:
    value = fields[i] if i < len(fields) else None
    return clean_text(value) if isinstance(value, str) else None


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
        self._seq = 0
        self.error_messages: list[str] = []
        self.failed_drvs: list[str] = []
        # Warnings, level-0 notes and plain stderr text (ssh's, git's, nix's
        # own before it switched to JSON): they often say *why* an error
        # happened, so the excerpt keeps the last ones next to the errors.
        self.context_lines: deque[str] = deque(maxlen=tail_lines)
        # Last lines of any kind, for explaining a run that ended without
        # an error message (killed, crashed).
        self.recent_lines: deque[str] = deque(maxlen=tail_lines)
        self.error_lines = 0
        self.log_lines = 0

    # -- input -------------------------------------------------------------

    def feed(self, line: str | bytes) -> list[Event]:
        """Consume one stderr line (trailing newline optional; bytes are
        decoded as UTF-8, U+FFFD replacing what is not)."""
        try:
            if isinstance(line, bytes):
                line = line.decode("utf-8", errors="replace")
            return self._feed(line.rstrip("\r\n"))
        except Exception:  # noqa: BLE001 - whatever the line, the build goes on
            return [LogEvent(text=clean_text(str(line)), source="plain")]

    def _feed(self, line: str) -> list[Event]:
        self._seq += 1
        obj = parse_line(line)
        try:
            events = self._dispatch(obj) if obj is not None else []
        except Exception:  # noqa: BLE001 - an odd line must not take a build down
            obj, events = None, []
        if obj is None:
            events = self._plain(clean_text(line))
        for event in events:
            if isinstance(event, LogEvent):
                self.recent_lines.append(f"{event.drv}> {event.text}" if event.source == "build" else event.text)
        progress = self._progress_event()
        if progress is not None:
            events.append(progress)
        return events

    def _plain(self, text: str) -> list[Event]:
        # Not from Nix's logger: ssh, git, or nix itself before it set up
        # JSON logging ("warning: unknown setting"). Read like a level-0
        # message, which is what such text would have been.
        self.log_lines += 1
        kind = nixexcerpt.classify(None, text)
        self._note(kind, text)
        return [LogEvent(text=text, source="plain", error=kind == nixexcerpt.ERROR)]

    def _note(self, kind: str, text: str) -> None:
        """Remember a message of class ``kind`` for the summary and excerpt."""
        if kind == nixexcerpt.ERROR:
            self.error_lines += text.count("\n") + 1
            if len(self.error_messages) < _MAX_ERRORS:
                self.error_messages.append(text)
            drv = nixexcerpt.failed_builder(text)
            if drv and drv not in self.failed_drvs:
                self.failed_drvs.append(drv)
            # A top-level goal keeps its build activity until nix exits:
            # once its failure is out it is not running, whatever lingers.
            for act in self._acts.values() if drv else ():
                if act.type == Act.BUILD and act.path == drv:
                    act.finished = True
        elif kind in (nixexcerpt.WARNING, nixexcerpt.NOTE):
            self.context_lines.extend(part for part in strip_ansi(text).rstrip().split("\n") if part.strip())

    def _dispatch(self, obj: dict[str, Any]) -> list[Event]:
        action = obj["action"]
        fields = obj.get("fields")
        fields = fields if isinstance(fields, list) else []
        act_id = obj.get("id")
        if action == "msg":
            return self._msg(obj)
        if type(act_id) is not int:
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
        text = clean_text(text)
        level = level if type(level) is int else LVL_INFO
        # Level 0 alone does not make an error: a daemon's warnings and
        # chatter reach the client at level 0 too (see builds.nixexcerpt).
        kind = nixexcerpt.classify(level, text, structured="raw_msg" in obj)
        self._note(kind, text)
        error = kind == nixexcerpt.ERROR
        # One event per line: a log view wants lines, and eval errors come
        # with a multi-line code frame.
        events: list[Event] = []
        for part in text.split("\n"):
            self.log_lines += 1
            events.append(LogEvent(text=part, source="msg", level=level, error=error))
        return events

    def _start(self, act_id: int, obj: dict[str, Any], fields: list[Any]) -> list[Event]:
        raw_type = obj.get("type")
        act_type = raw_type if type(raw_type) is int else int(Act.UNKNOWN)
        path = _str(fields, 0) if act_type in (Act.BUILD, Act.SUBSTITUTE, Act.COPY_PATH, Act.POST_BUILD_HOOK) else None
        act = _Activity(type=act_type, path=path, name=store_path_name(path) if path else None, seen=self._seq)
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
        if isinstance(text, str) and text and type(level) is int and level <= LVL_INFO:
            self.log_lines += 1
            events.append(
                LogEvent(text=clean_text(text), source="activity", level=level, drv=act.name, activity=act_id)
            )
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
        totals.settled += max(act.done, act.expected)
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
            act.seen = self._seq
            return [PhaseEvent(activity=act_id, drv=act.name, phase=phase)]
        if res_type == Res.PROGRESS:
            values = [_int(fields, i) for i in range(4)]
            if all(v is not None for v in values):
                act.done, act.expected, act.running, act.failed = values  # type: ignore[assignment]
                act.progressed = True
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
        if act:
            act.seen = self._seq
        if act and act.path and act.path in self._tails:
            self._tails[act.path].append(text)
        source = "build" if res_type == Res.BUILD_LOG_LINE else "post-build"
        return [LogEvent(text=text, source=source, drv=name, activity=act_id)]

    # -- derived state -----------------------------------------------------

    def counters(self, act_type: int) -> dict[str, int]:
        """done/expected/running/failed for one activity type, summed like
        nix's progress bar: finished activities plus live ones, with
        ``expected`` raised to what SetExpected announced and never below
        what finished activities had expected."""
        totals = self._totals.get(act_type, _TypeTotals())
        live = [a for a in self._acts.values() if a.type == act_type]
        done = totals.done + sum(a.done for a in live)
        expected = max(totals.settled + sum(a.expected for a in live), totals.expected)
        return {
            "done": done,
            "expected": expected,
            "running": sum(a.running for a in live),
            "failed": totals.failed + sum(a.failed for a in live),
        }

    def running_builds(self) -> list[_Activity]:
        """Build activities that are really building, oldest first.

        Nix keeps a top-level goal's build activity until it exits (the goal
        lives on in the worker's result list), so with several installables
        finished builds linger among the live ones. The Builds activity's
        own ``running`` count is the truth; of the live builds, those that
        showed signs of life (start, log line, phase) most recently make it
        up. Without a Builds count (a partial stream) every live one counts.
        """
        live = [a for a in self._acts.values() if a.type == Act.BUILD and a.name and not a.finished]
        reporters = [a for a in self._acts.values() if a.type == Act.BUILDS and a.progressed]
        if not reporters:
            return live
        running = sum(a.running for a in reporters)
        if running >= len(live):
            return live
        newest = {id(a) for a in sorted(live, key=lambda a: a.seen)[len(live) - running :]} if running > 0 else set()
        return [a for a in live if id(a) in newest]

    def stage(self) -> str:
        """Coarse state: evaluating, realising, downloading, building, finishing."""
        if not self._realising:
            # After the (last) realisation nix only writes out-links and exits.
            return "finishing" if self._realised else "evaluating"
        if self.running_builds():
            return "building"
        if {a.type for a in self._acts.values()} & {Act.SUBSTITUTE, Act.COPY_PATH}:
            return "downloading"
        return "realising"

    def tail(self, drv_path: str) -> list[str]:
        """Last log lines kept for a derivation's build (empty if unknown)."""
        return list(self._tails.get(drv_path, ()))

    def _live(self, act_type: int) -> list[_Activity]:
        return [a for a in self._acts.values() if a.type == act_type and a.name]

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable summary for a status panel."""
        builds = self.running_builds()
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


def error_excerpt(lines: Iterable[str] | NixProgress, limit: int = 40) -> str:
    """The part of a failed nix run's stderr a person needs, ANSI stripped.

    That is the errors (without the log tail a message may carry), then the
    warnings and plain stderr lines that may explain them, then the last log
    lines of each derivation whose builder failed (prefixed ``name> `` like
    ``nix -L``; taken from the message when the build's own lines never came,
    as through a daemon that does not forward them), ``limit`` lines at most
    plus blank separators. Without any error message (killed, crashed) it
    falls back to the last lines of whatever text there was. Give it the raw
    stderr lines, or the NixProgress that already saw them (which keeps its
    own, shorter, tails).
    """
    if isinstance(lines, NixProgress):
        progress = lines
    else:
        progress = NixProgress(tail_lines=limit)
        for line in lines:
            progress.feed(line)
    errors: list[str] = []
    message_tails: dict[str, list[str]] = {}
    for msg in dict.fromkeys(progress.error_messages):  # the same error twice says nothing new
        summary, tail = nixexcerpt.split_message(msg)
        errors += summary
        drv = nixexcerpt.failed_builder(msg)
        if drv and tail:
            message_tails.setdefault(drv, tail)
    tails = [
        f"{store_path_name(drv)}> {strip_ansi(text)}"
        for drv in progress.failed_drvs
        for text in (progress.tail(drv) or message_tails.get(drv, []))
    ]
    if not errors and not tails:
        recent = [strip_ansi(line) for line in progress.recent_lines if line.strip()]
        return "\n".join(recent[-limit:])
    return nixexcerpt.assemble(errors, list(progress.context_lines), tails, limit)
