"""The ``nix ... --log-format internal-json`` stream: wire format and UI events.

Each structured line is ``@nix {json}``; anything else is plain text. The JSON
has an ``action``:

* ``start``: ``id``, ``level``, ``type`` (activity type), ``text``, optional
  ``fields``. Nix 2.8 never writes the ``parent`` field (its JSON logger has a
  FIXME for it), so nothing here depends on the activity tree.
* ``stop``: ``id``.
* ``result``: ``id``, ``type`` (result type), ``fields``.
* ``msg``: ``level``, ``msg`` (ANSI coloured, may span several lines); errors
  additionally carry ``raw_msg``, ``file``, ``line`` and ``column``.

Newer Nix (2.18 on) adds ``parent`` to ``start`` and nothing else this
module relies on; keys come sorted (nlohmann's map) and non-ASCII text comes
as raw UTF-8, with invalid bytes already replaced by U+FFFD.

Field layouts, checked against Nix 2.8 output (see tests/data/) and its
progress bar, which is the reference consumer of the same events:

=============================  =============================================
start Build (105)              [drvPath, machine, round, nrRounds]
start Substitute (108)         [storePath, substituterUri]
start CopyPath (100)           [storePath, fromUri, toUri]
start FileTransfer (101)       [uri]
start QueryPathInfo (109)      [storePath, substituterUri]
start PostBuildHook (110)      [drvPath]
result BuildLogLine (101)      [line]           (also PostBuildLogLine, 107)
result SetPhase (104)          [phase]          (builder wrote setPhase)
result Progress (105)          [done, expected, running, failed]
result SetExpected (106)       [activityType, expected]
result FileLinked (100)        [bytes, blocks]
=============================  =============================================

Progress on Builds (104) counts derivations, on CopyPaths (103) store paths,
on CopyPath (100) and FileTransfer (101) bytes.

This module holds that vocabulary and the events the UI gets;
:mod:`builds.nixlog` holds the state machine. Pure: no I/O, no Django.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Union


class Act(IntEnum):
    """Activity types (nix/src/libutil/logging.hh)."""

    UNKNOWN = 0
    COPY_PATH = 100
    FILE_TRANSFER = 101
    REALISE = 102
    COPY_PATHS = 103
    BUILDS = 104
    BUILD = 105
    OPTIMISE_STORE = 106
    VERIFY_PATHS = 107
    SUBSTITUTE = 108
    QUERY_PATH_INFO = 109
    POST_BUILD_HOOK = 110
    BUILD_WAITING = 111
    FETCH_TREE = 112


class Res(IntEnum):
    """Result types."""

    FILE_LINKED = 100
    BUILD_LOG_LINE = 101
    UNTRUSTED_PATH = 102
    CORRUPTED_PATH = 103
    SET_PHASE = 104
    PROGRESS = 105
    SET_EXPECTED = 106
    POST_BUILD_LOG_LINE = 107


def activity_label(act_type: int) -> str:
    """``105`` -> ``"build"``; numbers from a newer Nix stay numbers."""
    try:
        return Act(act_type).name.lower().replace("_", "-")
    except ValueError:
        return str(act_type)


# Verbosity levels; `nix build` shows messages up to INFO by default.
LVL_ERROR = 0
LVL_WARN = 1
LVL_INFO = 3

# A line longer than this is not even tried as JSON: Nix never writes one
# (a build log line that long is cut by the builder's own output limits long
# before), and parsing hundreds of MiB would stall the build's reader.
MAX_JSON_CHARS = 16 * 1024 * 1024
# Text kept per line. The raw stream keeps everything; a log view, the
# error excerpt and the tails kept in memory do not need megabytes per line.
MAX_TEXT_CHARS = 64 * 1024

PREFIX = "@nix "
# CSI sequences (colours, cursor moves), OSC sequences and lone two-byte escapes.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_STORE_HASH_RE = re.compile(r"^[0-9a-df-np-sv-z]{32}-")  # nix base32: no e o t u


# NUL and lone surrogates (from a JSON "\\ud800" escape or a surrogateescape
# decode) are valid in a Python str but not in UTF-8 files, Redis messages
# or PostgreSQL text/jsonb, where they would fail the build's bookkeeping.
_UNSAFE_RE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` made safe to store anywhere (U+FFFD for NUL and lone
    surrogates) and cut to :data:`MAX_TEXT_CHARS`."""
    if len(text) > MAX_TEXT_CHARS:
        text = f"{text[:MAX_TEXT_CHARS]} [... {len(text) - MAX_TEXT_CHARS} characters cut]"
    return _UNSAFE_RE.sub("\ufffd", text)


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (Nix colours its messages even off a tty)."""
    return _ANSI_RE.sub("", text)


def store_path_name(path: str) -> str:
    """``/nix/store/<hash>-foo-1.0.drv`` -> ``foo-1.0`` (what ``nix -L`` prefixes
    lines with). A name without a hash is returned as it is."""
    base = _STORE_HASH_RE.sub("", path.rstrip("/").rsplit("/", 1)[-1])
    return base[: -len(".drv")] if base.endswith(".drv") else base


@dataclass(frozen=True)
class _Event:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``kind`` key tells the event types apart)."""
        return asdict(self)


@dataclass(frozen=True)
class LogEvent(_Event):
    """One line of text for the log view (ANSI escapes kept for the renderer).

    ``source`` is ``build`` (builder output), ``post-build`` (post-build hook
    output), ``msg`` (a Nix message), ``activity`` (an activity's start text,
    e.g. ``building '/nix/store/...drv'``) or ``plain`` (a non-``@nix`` line).
    """

    text: str
    source: str
    level: int | None = None
    drv: str | None = None
    activity: int | None = None
    error: bool = False
    kind: str = "log"


@dataclass(frozen=True)
class PhaseEvent(_Event):
    """A build entered a stdenv phase (``buildPhase``, ``installPhase``, ...)."""

    activity: int
    drv: str | None
    phase: str
    kind: str = "phase"


@dataclass(frozen=True)
class ActivityEvent(_Event):
    """A build, substitution or post-build hook started or stopped."""

    action: str  # "start" | "stop"
    activity: int
    type: str  # activity_label(): "build", "substitute", "post-build-hook"
    name: str | None
    kind: str = "activity"


@dataclass(frozen=True)
class ProgressEvent(_Event):
    """Counters changed. Byte counters are left out on purpose: they move on
    every 8 KiB copied, so they live in :meth:`NixProgress.snapshot` only."""

    stage: str
    builds: dict[str, int]
    downloads: dict[str, int]
    kind: str = "progress"


Event = Union[LogEvent, PhaseEvent, ActivityEvent, ProgressEvent]


def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON object of an ``@nix`` line, or None for plain text (and for
    an ``@nix`` line whose JSON is broken, which is then shown as text)."""
    if not line.startswith(PREFIX) or len(line) > MAX_JSON_CHARS:
        return None
    try:
        obj = json.loads(line[len(PREFIX) :])
    except (ValueError, RecursionError):  # nesting deeper than Python's stack
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("action"), str) else None
