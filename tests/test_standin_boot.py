"""Boot the stand-in imageless guest under QEMU (TCG) the way the launcher will.

Builds a rendered guest with the real nix, starts two C virtiofsd (tag
``store`` = /nix/store, tag ``modules`` = /lib/modules), direct-boots the
host's Debian kernel with the closure's initrd and ``init=`` from boot.json,
then checks the serial console banner, a shell round trip, the hvc0 shell
and an ACPI power-down through QMP. About 6-10 s of guest time under TCG.

The QEMU/virtiofsd helpers live here for now; the launcher module will take
them over.
"""

from __future__ import annotations

import glob
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
from tests.helpers import sample_settings
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
QEMU = shutil.which("qemu-system-x86_64")
NIX = shutil.which("nix")


# -- helpers (to move into the launcher) ---------------------------------------


def find_kernel() -> tuple[Path, Path] | None:
    """Newest /boot/vmlinuz-*-amd64 that has a /lib/modules/<version> directory."""
    found = []
    for path in glob.glob("/boot/vmlinuz-*-amd64"):
        version = Path(path).name[len("vmlinuz-"):]
        modules = Path("/lib/modules") / version
        if modules.is_dir() and os.access(path, os.R_OK):
            found.append((Path(path), modules))
    return sorted(found)[-1] if found else None


def virtiofsd_argv(socket_path: Path, source: str, *, extra: tuple[str, ...] = ()) -> list[str]:
    """The old C virtiofsd (QEMU 7.2): no read-only option, the guest mounts
    `store` with -o ro. Runs as root with its default namespace sandbox; in a
    container without namespaces add ("-o", "sandbox=chroot")."""
    return [VIRTIOFSD, f"--socket-path={socket_path}", "-o", f"source={source}", "-o", "cache=none", *extra]


def qemu_argv(*, kernel: Path, boot: dict[str, Any], run: Path, memory_mib: int = 1024, cpus: int = 2,
              extra_params: tuple[str, ...] = ()) -> list[str]:
    """Direct kernel boot of an imageless guest (TCG; sockets/logs in `run`)."""
    v1 = boot["org.nixos.bootspec.v1"]
    params = [*v1["kernelParams"], *extra_params, f"init={v1['init']}"]
    return [
        QEMU or "qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
        "-m", str(memory_mib), "-smp", str(cpus),
        "-kernel", str(kernel), "-initrd", v1["initrd"], "-append", " ".join(params),
        "-object", f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on", "-numa", "node,memdev=mem",
        "-chardev", f"socket,id=vfs-store,path={run / 'store.sock'}",
        "-device", "vhost-user-fs-pci,chardev=vfs-store,tag=store",
        "-chardev", f"socket,id=vfs-modules,path={run / 'modules.sock'}",
        "-device", "vhost-user-fs-pci,chardev=vfs-modules,tag=modules",
        # ttyS0 on a unix socket; wait=on: QEMU starts the guest once we are connected.
        "-chardev", f"socket,id=ser0,path={run / 'serial.sock'},server=on,wait=on",
        "-serial", "chardev:ser0",
        "-device", "virtio-serial-pci",
        "-chardev", f"file,id=hvc0,path={run / 'hvc0.log'}",
        "-device", "virtconsole,chardev=hvc0",
        "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
    ]


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before creating {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


class Console:
    """A unix-socket serial console: accumulate output, wait for text, type."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.data = b""

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text)
            if match:
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


class QMP:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rw", encoding="utf-8")
        json.loads(self.file.readline())  # greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply or "error" in reply:
                if "error" in reply:
                    raise RuntimeError(f"QMP {name}: {reply['error']}")
                return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- the test -----------------------------------------------------------------

KERNEL = find_kernel()


def build_guest(directory: Path, settings: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    directory.mkdir(parents=True)
    write_files(render_files(settings, title="boot test"), str(directory))
    env = dict(os.environ, NIX_CONFIG="substituters =\nexperimental-features = nix-command flakes\n")
    proc = subprocess.run(
        [NIX or "nix", "build", f"path:{directory}#toplevel", "--json", "--out-link", str(directory / "result")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = Path(json.loads(proc.stdout)[0]["outputs"]["out"])
    return out, json.loads((out / "boot.json").read_text())


@pytest.mark.slow
def test_boot_imageless_standin(tmp_path: Path) -> None:
    assert KERNEL is not None, "scripts/setup installs Debian's kernel: /boot/vmlinuz-*-amd64"
    kernel, modules = KERNEL
    settings = sample_settings(hostName="boot-test", profiles=["devel"], testSuites=["fstests"],
                               extraPackages=[["fio"]])
    _, boot = build_guest(tmp_path / "guest", settings)
    run = tmp_path / "run"
    run.mkdir()
    procs: list[subprocess.Popen] = []
    qemu = console = qmp = None
    logs = []
    try:
        for tag, source in (("store", "/nix/store"), ("modules", str(modules.parent))):
            log = open(run / f"virtiofsd-{tag}.log", "wb")
            logs.append(log)
            proc = subprocess.Popen(virtiofsd_argv(run / f"{tag}.sock", source), stdout=log, stderr=log)
            procs.append(proc)
            wait_for_socket(run / f"{tag}.sock", proc)
        qemu_log = open(run / "qemu.log", "wb")
        logs.append(qemu_log)
        started = time.monotonic()
        qemu = subprocess.Popen(qemu_argv(kernel=kernel, boot=boot, run=run), stdout=qemu_log, stderr=qemu_log)
        wait_for_socket(run / "serial.sock", qemu)
        console = Console(run / "serial.sock")

        banner = ("kdevweb-standin: boot-test ready (user kdev, modules: "
                  "backends.imageless user profiles.devel testSuites.fstests)")
        console.expect(re.escape(banner), timeout=90)
        boot_seconds = time.monotonic() - started
        console.expect(r"\]# ", timeout=10)  # the root prompt "[root@host:/]# "
        console.send("echo hi-$((6*7))")
        console.expect(r"\bhi-42\b", timeout=20)
        console.send("echo mounts-$(grep -c ' virtiofs ro' /proc/mounts) host-$(hostname)")
        console.expect(r"mounts-2 host-boot-test", timeout=20)
        console.send("ls /run/current-system/sw/share/kdevweb-standin/")
        console.expect(r"xfstests", timeout=20)

        deadline = time.monotonic() + 20
        while banner not in (run / "hvc0.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, "no shell banner on hvc0"
            time.sleep(0.2)

        qmp = QMP(run / "qmp.sock")
        qmp.command("system_powerdown")
        assert qemu.wait(timeout=30) == 0
        console.expect(r"ACPI power button: powering off", timeout=5)
        print(f"\nstand-in guest booted to its banner in {boot_seconds:.1f} s (TCG)")
    finally:
        for closable in (console, qmp):
            if closable is not None:
                closable.close()
        stop(qemu)
        for proc in procs:
            stop(proc)
        for log in logs:
            log.close()
