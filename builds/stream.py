"""Publishing a build's live output to the channel layer (worker side).

Messages to group ``build-<id>``:
- ``build.lines``    {start, lines}: log lines [start, start+len) — offsets let
  consumers drop duplicates and backfill gaps from the log file, because
  channels-redis silently drops messages past a channel's capacity;
- ``build.progress`` {progress}: the latest NixProgress snapshot;
- ``build.status``   {}: the row changed; consumers re-read it.

Publishing never blocks or breaks a build: if Redis is down, the lines are
still in the log file and consumers catch up from it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(build_id: int) -> str:
    return f"build-{build_id}"


def publish_status(build_id: int) -> None:
    """Tell consumers the build row changed (best effort)."""
    try:
        async_to_sync(get_channel_layer().group_send)(group_name(build_id), {"type": "build.status"})
    except Exception as exc:  # Redis down: pages fall back to the stored state
        log.warning("status publish for build %s failed: %s", build_id, exc)


class Publisher:
    """Batches lines and progress and sends them from its own event loop.

    One asyncio loop in a daemon thread keeps one channel layer connection
    for the whole build, instead of a new loop per message. Lines are sent
    at most every ``interval`` seconds in batches of at most ``max_batch``.
    """

    def __init__(self, build_id: int, *, interval: float = 0.02, max_batch: int = 1000) -> None:
        self.group = group_name(build_id)
        self.interval = interval
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._pending_start = 0
        self._pending_since = 0.0
        self._progress: dict | None = None
        self._status = False
        self._closed = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{self.group}", daemon=True)
        self._thread.start()

    def lines(self, start: int, lines: list[str]) -> None:
        with self._lock:
            if not self._pending:
                self._pending_start = start
                self._pending_since = time.time()
            self._pending.extend(lines)
        self._wake.set()

    def status(self) -> None:
        """Tell consumers the row changed (sent in order with the lines)."""
        with self._lock:
            self._status = True
        self._wake.set()

    def progress(self, snapshot: dict) -> None:
        with self._lock:
            self._progress = snapshot
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending and stop."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _take(self) -> tuple[list[dict], bool]:
        with self._lock:
            messages = []
            while self._pending:
                chunk = self._pending[: self.max_batch]
                # "t": when the oldest line of the batch was read from nix,
                # so clients (and bench/) can measure end-to-end latency.
                messages.append({"type": "build.lines", "start": self._pending_start, "lines": chunk,
                                 "t": self._pending_since})
                self._pending = self._pending[len(chunk):]
                self._pending_start += len(chunk)
            if self._progress is not None:
                messages.append({"type": "build.progress", "progress": self._progress})
                self._progress = None
            if self._status:
                messages.append({"type": "build.status"})
                self._status = False
            return messages, self._closed

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        layer = get_channel_layer()
        while True:
            await asyncio.to_thread(self._wake.wait, 1.0)
            self._wake.clear()
            messages, closed = self._take()
            for message in messages:
                try:
                    await layer.group_send(self.group, message)
                except Exception as exc:
                    log.warning("publish to %s failed (%s); consumers will backfill", self.group, exc)
                    break
            if closed:
                return
            # Let lines accumulate a little (batches, not one message a
            # line), unless they are already piling up faster than that.
            if sum(len(m.get("lines", ())) for m in messages) < self.max_batch:
                await asyncio.sleep(self.interval)

