"""Watch one running guest: QMP events and QEMU's exit, as state-machine events.

The owner of many guests waits on all of them at once, so this exposes
file descriptors (the QMP socket and a pidfd) for select/poll and turns
whatever became ready into :class:`~.state.Event` values. A pidfd rather
than QMP alone: ``kill -9`` of QEMU must show as ``crashed`` within
seconds, and a pidfd is readable the moment the process ends, whether it
is our child or was adopted from an earlier owner.
"""

from __future__ import annotations

import os
import select
import subprocess
from typing import Any

from guests.runtime.process import ProcessRecord, open_pidfd, record_of
from guests.runtime.qmp import QMPClient, QMPConnectionError
from guests.runtime.state import Event

# QMP events that change a guest's state; the rest (STOP, RESUME, NIC_RX_FILTER_CHANGED...)
# are only recorded.
_QMP_TO_KIND = {"SHUTDOWN": "shutdown", "RESET": "reset", "GUEST_PANICKED": "panicked"}


class GuestWatcher:
    """Events of one QEMU. ``popen`` when we started it (exit status known),
    else ``record`` for an adopted one (status unknown)."""

    def __init__(self, qmp: QMPClient | None, *, popen: subprocess.Popen[bytes] | None = None,
                 record: ProcessRecord | None = None) -> None:
        if (popen is None) == (record is None):
            raise ValueError("give exactly one of popen and record")
        if record is None:
            assert popen is not None
            record = record_of(popen.pid)  # unreaped until we wait: never fails
        self.qmp = qmp
        self.popen = popen
        self.record = record
        self.pidfd = open_pidfd(self.record)
        self.qmp_log: list[dict[str, Any]] = []  # every QMP event seen, for the timeline
        self.exited = False

    def filenos(self) -> list[int]:
        fds = [] if self.pidfd is None else [self.pidfd]
        if self.qmp is not None:
            fds.append(self.qmp.fileno())
        return fds

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Wait up to ``timeout`` for something to happen; the events, in order.

        After an ``exited`` event nothing more comes; call :meth:`close`.
        """
        if self.exited:
            return []
        events = self._qmp_events()
        if not events and self.pidfd is not None:
            select.select(self.filenos(), [], [], timeout)
            events = self._qmp_events()
        if self.pidfd is None or select.select([self.pidfd], [], [], 0)[0]:
            self.exited = True
            returncode = self.popen.wait() if self.popen is not None else None
            events.append(Event("exited", returncode=returncode))
        return events

    def _qmp_events(self) -> list[Event]:
        if self.qmp is None:
            return []
        try:
            raw = self.qmp.get_events()
        except QMPConnectionError:
            # QEMU closed QMP: it is exiting; the pidfd tells when it is gone.
            raw = list(self.qmp.events)
            self.qmp.close()
            self.qmp = None
        events = []
        for message in raw:
            self.qmp_log.append(message)
            kind = _QMP_TO_KIND.get(str(message.get("event")))
            if kind is not None:
                data = message.get("data")
                data = data if isinstance(data, dict) else {}
                detail = str(data.get("reason", data.get("action", "")))
                events.append(Event(kind, detail=detail))
        return events

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
