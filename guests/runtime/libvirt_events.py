"""libvirt domain events as state-machine events, on libvirt's own event loop.

The host agent learns what happens to its libvirt guests from libvirt's
lifecycle and reboot events (a ``virsh destroy`` behind kdevweb's back
arrives within milliseconds), not by polling. libvirt-python's default
event implementation (``virEventRegisterDefaultImpl``) runs in a thread of
its own here; callbacks come from that thread.

libvirtd may restart while guests run (they keep running: QEMU is not its
child in a way that matters). A keepalive notices the dead connection, the
close callback fires, and :class:`LibvirtWatcher` reconnects in the
background and calls ``on_reconnect`` so the owner re-reads every domain's
state (events sent while it was away are lost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt

from guests.runtime.libvirt import LibvirtGuestError, connect, marker_of
from guests.runtime.state import Event

_E = libvirt
_STOPPED_DETAIL = {
    _E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "the guest powered off",
    _E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed (forced off)",
    _E.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "the guest crashed",
    _E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated away",
    _E.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    _E.VIR_DOMAIN_EVENT_STOPPED_FAILED: "QEMU failed",
    _E.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "reverted to a snapshot",
}

_impl_lock = threading.Lock()
_impl_registered = False


def register_event_impl() -> None:
    """libvirt's default event loop, once per process, before any connection
    that wants events is opened."""
    global _impl_registered
    with _impl_lock:
        if not _impl_registered:
            libvirt.virEventRegisterDefaultImpl()
            # The default handler prints every libvirt error on stderr,
            # including "domain not found" from lookups we expect to miss.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _impl_registered = True


def lifecycle_events(event: int, detail: int) -> tuple[list[Event], str]:
    """A libvirt lifecycle event as state-machine events plus libvirt's reason."""
    if event == _E.VIR_DOMAIN_EVENT_STARTED:
        return [Event("started")], "libvirt: started"
    if event == _E.VIR_DOMAIN_EVENT_SHUTDOWN:
        if detail == _E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST:
            # QEMU was told to quit from the host (virsh destroy begins with
            # SIGTERM): not the guest's power-off, so it does not make the
            # coming stop expected; the STOPPED event says what it was.
            return [], "libvirt: QEMU asked to quit by the host"
        return [Event("shutdown", detail="libvirt: the guest shut down")], "libvirt: the guest shut down"
    if event == _E.VIR_DOMAIN_EVENT_STOPPED:
        why = f"libvirt: stopped: {_STOPPED_DETAIL.get(detail, f'detail {detail}')}"
        if detail == _E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
            return [Event("shutdown", detail=why), Event("exited", returncode=0)], why
        if detail == _E.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
            return [Event("panicked", detail=why)], why
        if detail == _E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
            # A force off: 'stopped' when kdevweb asked for it (the state
            # machine knows), 'crashed' when someone else did.
            return [Event("exited", returncode=-9)], why
        if detail == _E.VIR_DOMAIN_EVENT_STOPPED_FAILED:
            return [Event("exited", returncode=1)], why
        return [Event("exited", returncode=0)], why
    if event == _E.VIR_DOMAIN_EVENT_CRASHED:
        return [Event("panicked", detail="libvirt: the guest crashed")], "libvirt: crashed"
    names = {_E.VIR_DOMAIN_EVENT_DEFINED: "defined", _E.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
             _E.VIR_DOMAIN_EVENT_SUSPENDED: "paused", _E.VIR_DOMAIN_EVENT_RESUMED: "resumed",
             _E.VIR_DOMAIN_EVENT_PMSUSPENDED: "suspended"}
    return [], f"libvirt: {names.get(event, f'event {event}')}"


EventCallback = Callable[[str, list[Event], str], None]


class LibvirtWatcher:
    """Events of kdevweb's domains on one libvirt URI, with reconnection.

    ``on_event(domain_name, events, reason)`` is called for each lifecycle
    or reboot event of a domain carrying kdevweb's marker (others' domains
    are ignored); ``on_reconnect()`` after a new connection was made
    because the old one died. Both run on the event-loop thread.
    """

    def __init__(self, uri: str, on_event: EventCallback, *,
                 on_reconnect: Callable[[], None] | None = None, retry: float = 0.5) -> None:
        register_event_impl()
        self.uri = uri
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.retry = retry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._lost = threading.Event()
        self.reconnects = 0
        self._loop = threading.Thread(target=self._run_loop, name=f"libvirt-events {uri}", daemon=True)
        self._keeper = threading.Thread(target=self._keep_connected, name=f"libvirt-reconnect {uri}", daemon=True)

    # -- public -----------------------------------------------------------
    def start(self) -> None:
        # A periodic timeout keeps virEventRunDefaultImpl returning so stop() is noticed.
        libvirt.virEventAddTimeout(200, lambda _timer, _opaque: None, None)
        self._loop.start()
        self._connect()  # raises LibvirtGuestError when libvirtd is down at start
        self._keeper.start()

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None:
                raise LibvirtGuestError(f"not connected to libvirt at {self.uri} (reconnecting)")
            return self._conn

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._conn is not None

    def stop(self) -> None:
        self._stop.set()
        self._lost.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._deregister(conn)
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    # -- internals ------------------------------------------------------------
    def _run_loop(self) -> None:
        while not self._stop.is_set():
            libvirt.virEventRunDefaultImpl()

    def _connect(self) -> None:
        conn = connect(self.uri)
        # Notice a dead libvirtd within ~2 s even while no call is made.
        conn.setKeepAlive(1, 2)
        ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot, None),
        ]
        conn.registerCloseCallback(self._closed, None)
        with self._lock:
            self._conn = conn
            self._callback_ids = ids
        self._lost.clear()

    def _deregister(self, conn: libvirt.virConnect) -> None:
        for cid in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cid)
            except libvirt.libvirtError:
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        self._callback_ids = []

    def _closed(self, conn: libvirt.virConnect, _reason: int, _opaque: object) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        self._lost.set()

    def _keep_connected(self) -> None:
        while not self._stop.is_set():
            self._lost.wait()
            if self._stop.is_set():
                return
            try:
                self._connect()
            except (LibvirtGuestError, libvirt.libvirtError):
                time.sleep(self.retry)
                continue
            self.reconnects += 1
            if self.on_reconnect is not None:
                self.on_reconnect()

    def _ours(self, dom: libvirt.virDomain) -> bool:
        return marker_of(dom) is not None

    def _lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int,
                   _opaque: object) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            return  # its marker is gone with it; kdevweb undefines only its own
        if not self._ours(dom):
            return
        events, reason = lifecycle_events(event, detail)
        self.on_event(dom.name(), events, reason)

    def _reboot(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, _opaque: object) -> None:
        if self._ours(dom):
            self.on_event(dom.name(), [Event("reset")], "libvirt: the guest rebooted")
