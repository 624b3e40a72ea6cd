"""Does KVM really work here? Probe it with a short QEMU run, else use TCG.

``/dev/kvm`` existing proves little. On the machines this was written on
(a nested microVM) it exists and opens, yet a KVM guest either aborts
QEMU (an MSR assertion in ``kvm_buf_set_msrs``) or stops making progress
part-way through the firmware. So the probe boots the same machine and CPU
model the launcher uses (q35, ``-cpu host``) with no disk, and waits for
SeaBIOS to get through POST: it logs to the ISA debug console (port
0x402) and ends with "No bootable device". Under TCG that takes about
0.1 s, so a working KVM finishes well within the timeout; an abort, an
early exit or silence past the timeout means TCG.

The probe takes up to ``timeout`` seconds: callers cache the result per
host (:meth:`AccelProbe.as_dict` / :meth:`AccelProbe.from_dict`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from guests.runtime.qemu import QEMU, Accel

KVM_DEVICE = "/dev/kvm"
# SeaBIOS's last words when POST finished and nothing is bootable; the
# earlier ones ("Booting from ...") would do too but vary with devices.
POST_DONE = (b"No bootable device", b"Boot failed")


@dataclass(frozen=True)
class AccelProbe:
    accel: Accel
    reason: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccelProbe:
        accel = data.get("accel")
        if accel not in ("kvm", "tcg"):
            raise ValueError(f"not an accelerator: {accel!r}")
        return cls(accel=accel, reason=str(data.get("reason", "")), seconds=float(data.get("seconds", 0.0)))


def probe_argv(accel: Accel, debug_log: Path, *, qemu: str = QEMU) -> list[str]:
    """A diskless q35 that runs only the firmware, logging to ``debug_log``."""
    return [
        qemu, "-no-user-config", "-nodefaults", "-display", "none", "-no-reboot",
        "-machine", "q35", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max", "-m", "32",
        "-chardev", f"file,id=dbg,path={str(debug_log).replace(',', ',,')}",
        "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
    ]


def run_probe(accel: Accel, *, qemu: str = QEMU, timeout: float = 3.0) -> tuple[bool, str]:
    """Boot the firmware under ``accel``: (worked, why not / how long)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kdevweb-accel-") as tmp:
        log = Path(tmp) / "debugcon.log"
        try:
            proc = subprocess.Popen(probe_argv(accel, log, qemu=qemu), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return False, f"cannot run {qemu}: {exc.strerror}"
        try:
            deadline = started + timeout
            while True:
                if log.exists() and any(marker in log.read_bytes() for marker in POST_DONE):
                    return True, f"{accel} ran the firmware to the end in {time.monotonic() - started:.2f} s"
                code = proc.poll()
                if code is not None:
                    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    last = stderr.strip().splitlines()[-1:] or ["no message"]
                    status = f"signal {-code}" if code < 0 else f"status {code}"
                    return False, f"QEMU with {accel} ended ({status}) during the probe: {last[0][:300]}"
                if time.monotonic() >= deadline:
                    return False, f"a {accel} guest made no progress through the firmware in {timeout:g} s"
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


def probe_accel(*, qemu: str = QEMU, kvm_device: str = KVM_DEVICE, timeout: float = 3.0) -> AccelProbe:
    """KVM if a KVM guest really runs here, else TCG, with the reason."""
    started = time.monotonic()

    def result(accel: Accel, reason: str) -> AccelProbe:
        return AccelProbe(accel=accel, reason=reason, seconds=round(time.monotonic() - started, 3))

    if not os.path.exists(kvm_device):
        return result("tcg", f"{kvm_device} does not exist")
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return result("tcg", f"{kvm_device} is not readable and writable by this user")
    worked, why = run_probe("kvm", qemu=qemu, timeout=timeout)
    return result("kvm" if worked else "tcg", why)
