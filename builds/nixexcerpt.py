"""What Nix's messages mean, and the error excerpt built from them.

Nix words things differently across versions, and a nix-daemon changes what
reaches the client, so the meaning of a message cannot be read off its
level alone:

* Nix 2.8 to 2.28 (and Lix) report a failed builder as
  ``builder for '/nix/store/…drv' failed with exit code 1``; Nix 2.29 on as
  ``Cannot build '/nix/store/…drv'.`` followed by a
  ``Reason: builder failed with exit code 1.`` line. A dependency failure
  (``1 dependencies of derivation … failed to build`` /
  ``Reason: 1 dependency failed.``) is a consequence, not a builder failure.
* When Nix does not print build logs itself (always the case for a daemon's
  message, whose logger is never verbose) the message carries the build's
  last lines: ``last 10 log lines:`` (``Last`` from 2.29) then ``> line``s,
  then ``For full logs, run 'nix log …'.`` (from 2.28 over two lines).
* A client forwards every plain message of a nix-daemon at level 0, the
  errors' level (``printError`` on each ``STDERR_NEXT``), warnings and
  talkative chatter alike; only the text tells them apart. Structured
  errors (``logEI``) carry ``raw_msg`` and always begin with ``error:``.

Pure: no I/O, no Django.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from builds.nixevents import LVL_ERROR, LVL_WARN, strip_ansi

ERROR, WARNING, NOTE, CHATTER, INFO = "error", "warning", "note", "chatter", "info"

# "error:" or, when Nix names the program, "error [nix]:" (error.cc).
_ERROR_PREFIX_RE = re.compile(r"error(?:\s*\[[^\]]*\])?:")
_WARNING_PREFIX_RE = re.compile(r"(?:warning|evaluation warning|error \(ignored\)):")
# Messages a person never needs to see to understand a failure: daemon
# chatter forwarded at level 0 (an untrusted user's substituters are dropped
# on every build), download retries, lock contention, and hints only a
# command-line user can act on. A daemon ignoring a restricted setting is
# not chatter: it can explain a failure, so it stays a warning.
_CHATTER_RE = re.compile(
    r"linking '[^']*' to '[^']*/\.links/"
    r"|(?:warning: )?ignoring untrusted substituter '"
    r"|(?:warning: )?(?:error: )?SQLite database '[^']*' is busy"
    r"|.*; retrying in \d+ ms$"
    r"|\(use '--show-trace' to show detailed location information\)"
)

_OLD_FAILURE_RE = re.compile(r"builder for '(/[^']+\.drv)' (?:failed|died)")
_NEW_FAILURE_RE = re.compile(r"Cannot build '(/[^']+\.drv)'\.\s*\n\s*Reason: builder (?:failed|died)")
_TAIL_HEADER_RE = re.compile(r"^\s*last \d+ log lines:\s*$", re.IGNORECASE)
_TAIL_LINE_RE = re.compile(r"^\s*> ?(.*)$")
_FULL_LOGS_RE = re.compile(r"^\s*For full logs, run\b(.*)$")


def classify(level: int | None, text: str, structured: bool = False) -> str:
    """``error``, ``warning``, ``note`` (level 0 without a prefix: context
    such as ``cannot build on 'ssh://…': …``), ``chatter`` or ``info``.

    ``level`` is the message's Nix level (None for a plain-text line, which
    is read like a level-0 message); ``structured`` says it had ``raw_msg``.
    """
    bare = strip_ansi(text).lstrip()
    if _CHATTER_RE.match(bare):
        return CHATTER
    level = LVL_ERROR if level is None else level
    if level > LVL_WARN:
        return INFO
    if _WARNING_PREFIX_RE.match(bare):
        return WARNING
    if level == LVL_ERROR and (_ERROR_PREFIX_RE.match(bare) or structured):
        return ERROR
    return WARNING if level == LVL_WARN else NOTE


def failed_builder(text: str) -> str | None:
    """The derivation whose builder failed, if ``text`` reports that (in
    either wording); None for any other message."""
    bare = strip_ansi(text)
    match = _OLD_FAILURE_RE.search(bare) or _NEW_FAILURE_RE.search(bare)
    return match.group(1) if match else None


def split_message(text: str) -> tuple[list[str], list[str]]:
    """An error message's own lines (ANSI stripped, trailing blanks and the
    ``nix log`` hint dropped) and the build log tail it carries, if any."""
    lines = strip_ansi(text).rstrip().split("\n")
    summary: list[str] = []
    tail: list[str] = []
    in_tail = skip_command = False
    for line in lines:
        if skip_command:  # 2.28+: the command is on the line after the hint
            skip_command = False
            continue
        full_logs = _FULL_LOGS_RE.match(line)
        if full_logs:
            # A web user cannot run `nix log`; the tail is shown anyway.
            skip_command = full_logs.group(1).strip() == ":"
            in_tail = False
            continue
        if _TAIL_HEADER_RE.match(line):
            in_tail = True
            if summary:  # 2.8-2.28: "builder for '…' failed with exit code 1;"
                summary[-1] = summary[-1].rstrip().removesuffix(";")
            continue
        tail_line = _TAIL_LINE_RE.match(line) if in_tail else None
        if tail_line:
            tail.append(tail_line.group(1))
            continue
        in_tail = False
        summary.append(line.rstrip())
    # Blank lines (around an eval error's code frame) would read as the
    # excerpt's section breaks.
    return [line for line in summary if line.strip()], tail


def _dedupe(lines: Iterable[str], seen: set[str]) -> list[str]:
    out = []
    for line in lines:
        key = line.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(line)
    return out


def _cut(lines: list[str], keep: int, first: bool) -> list[str]:
    if keep <= 0:
        return []
    return lines[:keep] if first else lines[len(lines) - keep :]


def assemble(
    errors: list[str], context: list[str], tails: list[str], limit: int, max_line: int = 2000
) -> str:
    """Sections separated by a blank line: the errors (the first ones are the
    cause, later ones consequences), context (warnings and plain stderr
    lines such as ssh's own explanation; the last ones), and the failed
    builds' last log lines. ``limit`` lines at most, each cut at ``max_line``
    characters: an excerpt is read by a person, not parsed."""
    # Context repeating an error (a warning printed twice, once as plain
    # text before Nix switched to JSON) says nothing new.
    seen = {line.strip() for line in errors}
    context = _dedupe(context, seen)
    if len(errors) + len(context) + len(tails) > limit:
        # Errors and tails come first; context gets the room they leave,
        # and at least a fifth of the excerpt.
        room = max(1, limit // 5, limit - len(errors) - len(tails))
        context = _cut(context, min(len(context), room), first=False)
        rest = limit - len(context)
        keep_tail = min(len(tails), max(rest - len(errors), rest // 2))
        errors = _cut(errors, rest - keep_tail, first=True)
        tails = _cut(tails, keep_tail, first=False)
    sections = [section for section in (errors, context, tails) if section]
    lines: list[str] = []
    for section in sections:
        lines += ([""] if lines else []) + section
    return "\n".join(line if len(line) <= max_line else line[:max_line] + " [...]" for line in lines)
