"""Boot the stand-in imageless guest under QEMU (TCG) the way the launcher will.

Builds a rendered guest with the real nix, then starts it with
``guests.runtime``: two C virtiofsd (tag ``store`` = /nix/store, tag
``modules`` = /lib/modules, both read-only on the host side), a direct boot
of the host's Debian kernel with the closure's initrd and ``init=`` from
boot.json, CPUs paused until the test is on the serial socket. Checks the
serial banner, a shell round trip, the hvc0 banner (from the console's
``logfile=``), the serial log and an ACPI power-down through QMP (the
SHUTDOWN event, QEMU's exit, virtiofsd gone). About 6-10 s of guest time
under TCG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from guests.flake import render_files, write_files
from guests.runtime.bootspec import read_bootspec
from guests.runtime.kernel import debian_kernels
from guests.runtime.launch import RunningGuest, ShareSource, start_guest
from guests.runtime.qemu import GuestSpec, RunDir, Share
from tests.helpers import sample_settings

NIX = shutil.which("nix")


class Console:
    """A unix-socket serial console: accumulate output, wait for text, type.

    Each expect() searches only output after the previous match, so an
    answer already seen cannot satisfy a later question.
    """

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.data = b""
        self.pos = 0

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not seen on the console; output so far:\n{self.text[-4000:]}")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError(f"console closed while waiting for {pattern!r}:\n{self.text[-4000:]}")
            self.data += chunk

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} not in {path.name}"
        time.sleep(0.2)


# -- the test -----------------------------------------------------------------

KERNELS = debian_kernels()
KERNEL = KERNELS[-1] if KERNELS else None


def build_guest(directory: Path, settings: dict[str, Any]) -> Path:
    directory.mkdir(parents=True)
    write_files(render_files(settings, title="boot test"), str(directory))
    env = dict(os.environ, NIX_CONFIG="substituters =\nexperimental-features = nix-command flakes\n")
    proc = subprocess.run(
        [NIX or "nix", "build", f"path:{directory}#toplevel", "--json", "--out-link", str(directory / "result")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)[0]["outputs"]["out"])


@pytest.mark.slow
def test_boot_imageless_standin(tmp_path: Path) -> None:
    assert KERNEL is not None, "scripts/setup installs Debian's kernel: /boot/vmlinuz-*-amd64"
    settings = sample_settings(hostName="boot-test", profiles=["devel"], testSuites=["fstests"],
                               extraPackages=[["fio"]],
                               shares={"/mnt/src": {"tag": "src", "options": []},
                                       "/mnt/docs": {"tag": "docs", "options": []}})
    out = build_guest(tmp_path / "guest", settings)
    boot = read_bootspec(out)
    run = RunDir(tmp_path / "run")
    src, docs = tmp_path / "src", tmp_path / "docs"
    src.mkdir()
    docs.mkdir()
    (src / "token").write_text("token-from-host-7f3a\n")
    spec = GuestSpec(kernel=KERNEL.image, initrd=boot.initrd, init=boot.init, boot_params=boot.kernel_params,
                     run_dir=run, memory_mib=1024, vcpus=2, accel="tcg", name="boot-test", no_reboot=True,
                     paused=True, shares=(Share("src", run.virtiofsd_socket("src")),
                                          Share("docs", run.virtiofsd_socket("docs"))))
    guest: RunningGuest | None = None
    console = None
    try:
        started = time.monotonic()
        # The directory holding <version>/: the guest mounts it on /lib/modules.
        guest = start_guest(spec, modules_root=KERNEL.modules_dir.parent,
                            shares={"src": ShareSource(src), "docs": ShareSource(docs, read_only=True)})
        qmp = guest.qmp
        assert qmp.execute("query-status")["status"] == "prelaunch"
        console = Console(run.serial_socket)
        qmp.execute("cont")  # paused until the test listens: the socket sees every byte

        banner = ("kdevweb-standin: boot-test ready (user kdev, modules: "
                  "backends.imageless user profiles.devel testSuites.fstests mounts.shares)")
        console.expect(re.escape(banner), timeout=90)
        boot_seconds = time.monotonic() - started
        console.expect(r"\]# ", timeout=10)  # the root prompt "[root@host:/]# "
        console.send("echo hi-$((6*7))")
        console.expect(r"\bhi-42\b", timeout=20)
        # store, modules and the two shares mounted; only the store read-only in the guest
        # (stand-in switch standin.readOnlyStore).
        console.send("echo mounts-$(grep -c ' virtiofs ' /proc/mounts)-$(grep -c ' /nix/store virtiofs ro' /proc/mounts)"
                     " host-$(hostname)")
        console.expect(r"mounts-4-1 host-boot-test", timeout=20)
        console.send("ls /run/current-system/sw/share/kdevweb-standin/")
        console.expect(r"xfstests", timeout=20)
        # The modules share is read-only on the host side too (the guest mounted it rw).
        console.send("touch /lib/modules/kdevweb-probe 2>&1 | grep -c 'Read-only file system' | sed 's/^/ro-modules-/'")
        console.expect(r"ro-modules-1", timeout=20)
        assert not Path("/lib/modules/kdevweb-probe").exists()
        # Extra shares: read-write both ways, and one read-only on the host side.
        console.send("cat /mnt/src/token; echo from-guest > /mnt/src/reply")
        console.expect(r"(?m)^token-from-host-7f3a", timeout=20)
        console.send("touch /mnt/docs/new 2>&1 | grep -c 'Read-only file system' | sed 's/^/ro-docs-/'")
        console.expect(r"ro-docs-1", timeout=20)
        assert (src / "reply").read_text() == "from-guest\n"
        assert list(docs.iterdir()) == []

        # hvc0 nobody connected to, and the serial line: both logged in full.
        wait_for_text(run.console_log, banner, timeout=20)
        wait_for_text(run.serial_log, banner, timeout=5)
        assert "Linux version" in run.serial_log.read_text(errors="replace")

        qmp.execute("system_powerdown")
        event = qmp.wait_event("SHUTDOWN", timeout=30)
        assert event["data"]["guest"] is True
        assert guest.qemu.wait(timeout=30) == 0
        console.expect(r"ACPI power button: powering off", timeout=5)
        for daemon in guest.virtiofsds:  # each exits once QEMU disconnects
            assert daemon.proc is not None and daemon.proc.wait(timeout=10) is not None
        print(f"\nstand-in guest booted to its banner in {boot_seconds:.1f} s (TCG)")
    finally:
        if console is not None:
            console.close()
        if guest is not None:
            guest.stop()
