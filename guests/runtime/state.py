"""A guest's lifecycle as a pure state machine (no I/O, no clock).

States are what the pages show; events are what the owner of the guest
sees or is asked: a start request, QMP's greeting, QMP events
(``SHUTDOWN``, ``RESET``, ``GUEST_PANICKED``) and the exit of QEMU. The
owner feeds each one to :func:`transition` and stores the result, so the
rules live in one place and a test can walk every path without QEMU.

How an exit is read: QEMU exits 0 both for a guest power-off and for a
host's ``quit``/SIGTERM, so "stopped" versus "crashed" depends on what
was seen before it: a requested stop, or a ``SHUTDOWN`` event, makes any
exit a stop; a non-zero status or a signal without either is a crash.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from guests.runtime.process import describe_exit


class State(str, enum.Enum):
    DEFINED = "defined"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """A QEMU process exists (or is being made) for the guest."""
        return self in (State.STARTING, State.RUNNING, State.STOPPING)


class InvalidTransition(ValueError):
    """The event makes no sense in the current state (e.g. stop a stopped guest)."""


@dataclass(frozen=True)
class Event:
    """One thing that happened; ``kind`` is one of :data:`KINDS`."""

    kind: str
    # "exited": Popen-style returncode (negative = signal), None when the
    # process was not ours and the status is unknown.
    returncode: int | None = None
    # "shutdown": QMP's SHUTDOWN data; "failed"/"panicked": a reason.
    detail: str = ""


KINDS = frozenset({
    "start",        # a user asked to start
    "started",      # QEMU greeted on QMP: processes are up
    "failed",       # the start did not complete (LaunchError, SpecError...)
    "stop",         # a user asked for an ACPI shutdown or a force off
    "shutdown",     # QMP SHUTDOWN: the guest powered off, or QEMU was told to quit
    "reset",        # QMP RESET: the guest rebooted
    "panicked",     # QMP GUEST_PANICKED
    "exited",       # QEMU's process ended
})


@dataclass(frozen=True)
class Outcome:
    state: State
    # Why, in words for the event timeline (empty when nothing to add).
    note: str = ""
    # Set once a stop was requested or the guest shut down: the next exit
    # is then a stop, not a crash. The owner stores it with the state.
    stopping_expected: bool = False


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "ended (status unknown: it was not started by this owner)"
    return describe_exit(returncode)


def transition(state: State, event: Event, *, stopping_expected: bool = False) -> Outcome:
    """The state after ``event``; InvalidTransition when it does not apply."""
    kind = event.kind
    if kind not in KINDS:
        raise ValueError(f"unknown event {kind!r}")
    if kind == "start":
        if state.active:
            raise InvalidTransition(f"the guest is already {state.value}")
        return Outcome(State.STARTING)
    if kind == "failed":
        if state is not State.STARTING:
            raise InvalidTransition(f"a start failed but the guest is {state.value}")
        return Outcome(State.FAILED, event.detail)
    if kind == "started":
        if state is not State.STARTING:
            raise InvalidTransition(f"QEMU came up but the guest is {state.value}")
        return Outcome(State.RUNNING)
    if not state.active:
        # Late events from a QEMU that is already accounted for change nothing.
        if kind in ("shutdown", "reset", "panicked", "exited"):
            return Outcome(state, stopping_expected=stopping_expected)
        raise InvalidTransition(f"the guest is {state.value}, not running")
    if kind == "stop":
        if state is State.STARTING:
            # Stopping a start in progress is allowed: it ends as stopped.
            return Outcome(State.STOPPING, "stop requested while starting", stopping_expected=True)
        return Outcome(State.STOPPING, stopping_expected=True)
    if kind == "shutdown":
        return Outcome(State.STOPPING, event.detail, stopping_expected=True)
    if kind == "reset":
        return Outcome(state, "the guest rebooted", stopping_expected=stopping_expected)
    if kind == "panicked":
        return Outcome(State.CRASHED, f"guest kernel panic{': ' + event.detail if event.detail else ''}")
    # kind == "exited"
    how = describe_returncode(event.returncode)
    if state is State.STARTING and not stopping_expected:
        return Outcome(State.FAILED, f"QEMU {how} while starting")
    if stopping_expected:
        return Outcome(State.STOPPED, f"QEMU {how}")
    if event.returncode == 0:
        # Exit 0 without a SHUTDOWN event seen: the event was lost (e.g. no
        # QMP connection at the time); QEMU exits 0 only when told to.
        return Outcome(State.STOPPED, f"QEMU {how}")
    return Outcome(State.CRASHED, f"QEMU {how}")
