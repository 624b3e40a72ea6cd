"""A small synchronous QMP client over a unix socket, with an event queue.

QMP interleaves asynchronous events (``SHUTDOWN``, ``STOP``, ``RESET``...)
with command replies on one stream. As in nixpkgs' test driver, events
that arrive while a command waits for its reply are queued, not dropped,
so a caller that issues ``system_powerdown`` and then waits for
``SHUTDOWN`` sees the event even if it came before the reply.

One command at a time (no ``oob``); not thread-safe: give each thread its
own connection (QEMU accepts one client per QMP socket, so the owner of a
guest holds the connection and serves the others).
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

# QMP messages are small; a line longer than this means a broken peer.
_MAX_LINE = 16 << 20


class QMPError(RuntimeError):
    """QEMU refused a command; ``error_class`` is QMP's ``class`` (e.g. ``CommandNotFound``)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP {command}: {error_class}: {desc}")


class QMPConnectionError(ConnectionError):
    """The QMP connection failed, closed, or QEMU spoke something other than QMP."""


class QMPTimeout(TimeoutError):
    """No reply or event within the time given."""


class QMPClient:
    """Connected and in command mode once constructed (:meth:`connect`)."""

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0) -> None:
        self._sock = sock
        self._buffer = b""
        self._next_id = 0
        self.events: deque[dict[str, Any]] = deque()
        self.greeting = self._read_message(timeout)
        if "QMP" not in self.greeting:
            raise QMPConnectionError(f"not a QMP greeting: {self.greeting!r}")
        self.execute("qmp_capabilities", timeout=timeout)

    @classmethod
    def connect(cls, path: Path, *, timeout: float = 10.0,
                alive: Callable[[], bool] | None = None) -> QMPClient:
        """Connect to QEMU's QMP socket, retrying until it exists (QEMU
        creates it shortly after starting) or ``timeout`` runs out; stops
        retrying early once ``alive()`` says QEMU has exited."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() >= deadline or (alive is not None and not alive()):
                    raise QMPConnectionError(f"cannot connect to {path}: {exc}") from None
                time.sleep(0.02)
        try:
            return cls(sock, timeout=max(0.1, deadline - time.monotonic()))
        except BaseException:
            sock.close()
            raise

    def fileno(self) -> int:
        """The socket, for select/poll; call :meth:`get_events` when it is readable."""
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands --------------------------------------------------------------

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float = 10.0) -> Any:
        """Run ``command``; its ``return`` value, or QMPError with QEMU's error.

        Events received meanwhile go to :attr:`events`.
        """
        self._next_id += 1
        msg_id = f"kdevweb-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPConnectionError(f"QMP {command}: {exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline - time.monotonic())
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != msg_id:
                continue  # a reply to a command whose wait timed out earlier
            if "error" in reply:
                error = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QMPError(command, str(error.get("class", "GenericError")), str(error.get("desc", reply)))
            if "return" in reply:
                return reply["return"]
            raise QMPConnectionError(f"QMP {command}: unexpected reply {reply!r}")

    # -- events ----------------------------------------------------------------

    def wait_event(self, name: str | None = None, *, timeout: float = 10.0) -> dict[str, Any]:
        """The first queued or arriving event called ``name`` (any event if
        None); earlier events of other names stay queued, in order."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if name is None or event.get("event") == name:
                    self.events.remove(event)
                    return event
            message = self._read_message(deadline - time.monotonic(), waiting_for=name or "an event")
            if "event" in message:
                self.events.append(message)

    def get_events(self) -> list[dict[str, Any]]:
        """Queued events, plus any already readable without waiting; clears the queue."""
        try:
            while True:
                message = self._read_message(0.0)
                if "event" in message:
                    self.events.append(message)
        except QMPTimeout:
            pass
        events = list(self.events)
        self.events.clear()
        return events

    # -- wire --------------------------------------------------------------------

    def _read_message(self, timeout: float, waiting_for: str = "a reply") -> dict[str, Any]:
        deadline = time.monotonic() + max(timeout, 0.0)
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise QMPConnectionError("QMP message too long")
            # 0 makes the socket non-blocking: "anything already there?"
            self._sock.settimeout(max(deadline - time.monotonic(), 0.0))
            try:
                chunk = self._sock.recv(65536)
            except (BlockingIOError, socket.timeout):
                raise QMPTimeout(f"no QMP {waiting_for} in time") from None
            except ConnectionResetError:
                # What an exiting QEMU's socket gives if unread data was left.
                raise QMPConnectionError("QMP connection closed by QEMU (reset)") from None
            except OSError as exc:
                raise QMPConnectionError(f"QMP connection failed: {exc}") from None
            if not chunk:
                raise QMPConnectionError("QMP connection closed by QEMU")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise QMPConnectionError(f"QMP sent invalid JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise QMPConnectionError(f"QMP sent a non-object: {line[:200]!r}")
        return message
