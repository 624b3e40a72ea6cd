"""Many console relays in one event loop: the ones a host should run.

The supervisor (``manage.py consolerelay``) tells the pool which consoles
exist (:meth:`RelayPool.sync`: QEMU guests' chardev sockets, libvirt
guests' domains); the pool starts a relay for each new one,
stops those no longer wanted, and restarts one whose task died. Django-free.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guests.runtime.offsetstream import console_keys
from guests.runtime.relay import ConsoleRelay
from guests.runtime.relaysource import ChardevSource, ConsoleSource
from guests.runtime.transcript_removal import remove_if_marked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsoleSpec:
    guest_id: int
    console: str  # "ttyS0" or "hvc0"
    socket_path: Path | None  # a QEMU guest's chardev socket (None: a libvirt guest)
    logfile: Path | None
    transcript_dir: Path
    libvirt_uri: str | None = None  # a libvirt guest's: its console through libvirt's stream
    domain: str | None = None
    device: str | None = None  # the domain's console alias (serial0: the serial line, console1: the virtio console)

    def source(self) -> ConsoleSource:
        if self.libvirt_uri and self.domain:
            # Imported here: hosts without libvirt guests need no libvirt-python.
            from guests.runtime.libvirt_console import LibvirtConsoleSource

            return LibvirtConsoleSource(self.libvirt_uri, self.domain, self.logfile, device=self.device)
        if self.socket_path is None:
            raise ValueError(f"console {self.console} of guest {self.guest_id} has no socket and no domain")
        return ChardevSource(self.socket_path, self.logfile)


class RelayPool:
    def __init__(self, redis: Any, *, keep_seconds: float | None = None) -> None:
        self.redis = redis
        self.keep_seconds = keep_seconds
        self.running: dict[tuple[int, str], tuple[ConsoleSpec, ConsoleRelay, asyncio.Task]] = {}

    async def sync(self, wanted: list[ConsoleSpec]) -> None:
        by_key = {(spec.guest_id, spec.console): spec for spec in wanted}
        for key in list(self.running):
            spec, relay, task = self.running[key]
            if by_key.get(key) != spec or task.done():
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("relay for guest %s %s died: %r; restarting", *key, task.exception())
                await self._stop(key)
                if key not in by_key:
                    await self._purge(*key)
                    # Deleted "with its transcripts" (a marker the host agent left): only now, its relay stopped.
                    await asyncio.to_thread(remove_if_marked, spec.transcript_dir)
        for key, spec in by_key.items():
            if key not in self.running:
                relay = ConsoleRelay(source=spec.source(), transcript_dir=spec.transcript_dir,
                                     redis=self.redis, keys=console_keys(spec.guest_id, spec.console),
                                     keep_seconds=self.keep_seconds)
                self.running[key] = (spec, relay, asyncio.create_task(relay.run()))

    async def _stop(self, key: tuple[int, str]) -> None:
        _spec, relay, task = self.running.pop(key)
        relay.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _purge(self, guest_id: int, console: str) -> None:
        """The guest is gone: free its Redis keys (its transcript stays on disk)."""
        prefix = console_keys(guest_id, console).prefix
        try:
            keys = [key async for key in self.redis.scan_iter(match=prefix + ":*", count=1000)]
            if keys:
                await self.redis.delete(*keys)
        except Exception as exc:  # noqa: BLE001 - Redis away: the keys stay until next time
            log.warning("could not remove the Redis keys of %s: %s", prefix, exc)

    async def close(self) -> None:
        for key in list(self.running):
            await self._stop(key)
