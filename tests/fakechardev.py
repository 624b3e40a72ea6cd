"""A unix-socket server that behaves like QEMU's socket chardev with
``server=on,wait=off,logfile=``: one client at a time, every byte the
"guest" writes goes to the log file, and to the client only while one is
connected. Optionally echoes input like a tty in cooked mode. Used by the
relay tests and the console benches; ``python -m tests.fakechardev`` runs
one as a process of its own (as QEMU is), for bench/console_latency.py.

Like QEMU (chardev/char.c ``qemu_chr_write_buffer``), a byte goes to the
client first and to the log just after, so a relay can see a byte on the
socket that the log does not have yet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path


class FakeChardev:
    def __init__(self, path: Path, logfile: Path | None = None, *, echo: bool = True) -> None:
        self.path = Path(path)
        self.logfile = logfile
        self.echo = echo
        self.received = bytearray()
        self.lock = threading.Lock()
        self.client: socket.socket | None = None
        self.connected = threading.Event()
        # (received, echoed) perf_counter pairs, for the latency bench's breakdown.
        self.stamps: list[tuple[float, float]] | None = None
        self._start()

    def _start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        # QEMU truncates logfile= when it starts (no logappend).
        self._log = open(self.logfile, "wb") if self.logfile else None
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.client = conn
            self.connected.set()
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                got = time.perf_counter()
                with self.lock:
                    self.received += data
                if self.echo:
                    self.emit(data)
                if self.stamps is not None:
                    self.stamps.append((got, time.perf_counter()))
            with self.lock:
                self.client = None
            self.connected.clear()
            conn.close()

    def emit(self, data: bytes) -> None:
        """The guest writes ``data``: to the log always, to the client if any."""
        with self.lock:
            if self.client is not None:
                try:
                    self.client.sendall(data)
                except OSError:
                    pass
            if self._log is not None:
                self._log.write(data)
                self._log.flush()

    def wait_client(self, timeout: float = 10.0) -> None:
        if not self.connected.wait(timeout):
            raise TimeoutError("no client connected to the fake chardev")

    def stop(self) -> None:
        """QEMU exits: the client sees EOF, the socket file stays (refusing)."""
        self._stop = True
        with self.lock:
            if self.client is not None:
                try:
                    self.client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)
        if self._log is not None:
            self._log.close()
        self.connected.clear()

    def restart(self) -> None:
        """A new QEMU: new socket (new inode), new log (the launcher removes
        the old one first, see guests/runtime/launch.py)."""
        self.stop()
        os.unlink(self.path)
        if self.logfile is not None:
            os.unlink(self.logfile)
        self._start()


def main(argv: list[str] | None = None) -> None:
    """Serve one fake chardev until SIGTERM; with --flood, the guest writes
    64 KB of random bytes as fast as the client takes them; with --stamps,
    (received, echoed) times go to that file as JSON at exit."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--no-echo", action="store_true")
    parser.add_argument("--flood", action="store_true")
    parser.add_argument("--stamps", type=Path)
    args = parser.parse_args(argv)
    dev = FakeChardev(args.socket, args.log, echo=not args.no_echo)
    if args.stamps:
        dev.stamps = []
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    chunk = os.urandom(65536)
    while not done.is_set():
        if args.flood and dev.client is not None:
            dev.emit(chunk)
        else:
            done.wait(0.1)
    if args.stamps:
        args.stamps.write_text(json.dumps(dev.stamps))
    dev.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
