"""guests.runtime.state: every lifecycle path, without QEMU."""

from __future__ import annotations

import signal

import pytest

from guests.runtime.state import Event, InvalidTransition, State, transition

S = State


def walk(*events: Event, state: State = S.DEFINED) -> tuple[State, list[str]]:
    expected, notes = False, []
    for event in events:
        outcome = transition(state, event, stopping_expected=expected)
        state, expected = outcome.state, outcome.stopping_expected
        notes.append(outcome.note)
    return state, notes


START, UP = Event("start"), Event("started")


def test_start_and_acpi_shutdown() -> None:
    state, notes = walk(START, UP, Event("stop"), Event("shutdown", detail="guest-shutdown"),
                        Event("exited", returncode=0))
    assert state is S.STOPPED and notes[-1] == "QEMU exited 0"


def test_guest_powers_itself_off() -> None:
    assert walk(START, UP, Event("shutdown", detail="guest-shutdown"), Event("exited", returncode=0))[0] is S.STOPPED


def test_force_off_is_a_stop_even_by_sigkill() -> None:
    state, notes = walk(START, UP, Event("stop"), Event("exited", returncode=-signal.SIGKILL))
    assert state is S.STOPPED and notes[-1] == "QEMU killed by SIGKILL"


@pytest.mark.parametrize("returncode, note", [
    (-signal.SIGKILL, "QEMU killed by SIGKILL"),
    (-signal.SIGABRT, "QEMU killed by SIGABRT"),
    (1, "QEMU exited 1"),
    (None, "QEMU ended (status unknown: it was not started by this owner)"),
])
def test_unexpected_exit_is_a_crash(returncode: int | None, note: str) -> None:
    state, notes = walk(START, UP, Event("exited", returncode=returncode))
    assert state is S.CRASHED and notes[-1] == note


def test_exit_0_without_a_seen_shutdown_is_still_a_stop() -> None:
    assert walk(START, UP, Event("exited", returncode=0))[0] is S.STOPPED


def test_failures_while_starting() -> None:
    state, notes = walk(START, Event("failed", detail="QEMU exited 1 at start: could not load kernel"))
    assert state is S.FAILED and "could not load kernel" in notes[-1]
    state, notes = walk(START, Event("exited", returncode=1))
    assert state is S.FAILED and notes[-1] == "QEMU exited 1 while starting"
    # Stopping a start in progress ends as stopped, not failed.
    assert walk(START, Event("stop"), Event("exited", returncode=-signal.SIGTERM))[0] is S.STOPPED


def test_reboot_keeps_running_and_panic_crashes() -> None:
    assert walk(START, UP, Event("reset"))[0] is S.RUNNING
    state, notes = walk(START, UP, Event("panicked", detail="pause"))
    assert state is S.CRASHED and notes[-1] == "guest kernel panic: pause"
    # The owner then force-offs the panicked QEMU: its exit changes nothing.
    assert transition(S.CRASHED, Event("exited", returncode=-signal.SIGKILL)).state is S.CRASHED


@pytest.mark.parametrize("state", [S.STOPPED, S.CRASHED, S.FAILED, S.DEFINED])
def test_restart_from_any_resting_state(state: State) -> None:
    assert transition(state, START).state is S.STARTING


@pytest.mark.parametrize("state, event", [
    (S.STARTING, START), (S.RUNNING, START), (S.STOPPING, START),
    (S.STOPPED, Event("stop")), (S.DEFINED, Event("stop")),
    (S.RUNNING, UP), (S.STOPPED, UP), (S.RUNNING, Event("failed")),
])
def test_invalid_transitions(state: State, event: Event) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, event)


def test_unknown_event_kind() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        transition(S.RUNNING, Event("teleport"))


def test_active_states() -> None:
    assert {s for s in State if s.active} == {S.STARTING, S.RUNNING, S.STOPPING}
    assert S("running") is S.RUNNING and S.RUNNING.value == "running"
