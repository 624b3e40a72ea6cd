"""Guest start and crash latency: kdevweb versus a bare QEMU with the same argv.

Usage (as root, after scripts/setup): .venv/bin/python bench/guest_start.py [N]

Each of N rounds, alternating:
- kdevweb: ``guest_start`` (the service a Start button calls) -> the host
  agent (woken through Redis) -> virtiofsd + QEMU -> the first byte in the
  serial log (the decompressor's, see EARLY); then ``kill -9`` of that QEMU -> the guest row says
  ``crashed`` (what the page's websocket sends next);
- bare: the same virtiofsd argv and the same QEMU argv (runtime.qemu_argv of
  an identical spec), started directly -> the first byte in its serial log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import shutil
import sys
import time
from pathlib import Path

from common import percentiles, setup, start, stop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# The kernel's decompressor writes to the serial port with this: the first
# byte then marks "the machine runs the kernel" (~0.3 s in) instead of the
# serial driver's start, seconds into a TCG boot, which would bury the
# launch overhead in boot-time noise.
EARLY = "earlyprintk=serial,ttyS0,115200"


def wait_first_byte(path: Path, t0: float, timeout: float = 60.0) -> float:
    while True:
        try:
            if path.stat().st_size > 0:
                return (time.monotonic() - t0) * 1000
        except FileNotFoundError:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no serial output in {path}")
        time.sleep(0.001)


def bare_round(spec, modules_root: Path) -> float:
    from guests.runtime.qemu import qemu_argv
    from guests.runtime.virtiofsd import virtiofsd_argv

    run = spec.run_dir
    run.path.mkdir(parents=True, exist_ok=True)
    for name in run.path.iterdir():
        name.unlink()
    t0 = time.monotonic()
    daemons = [subprocess.Popen(virtiofsd_argv(socket_path=run.virtiofsd_socket(tag), source=src, read_only=True),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
               for tag, src in (("store", Path("/nix/store")), ("modules", modules_root))]
    for tag in ("store", "modules"):
        while not run.virtiofsd_socket(tag).exists():
            time.sleep(0.001)
    qemu = subprocess.Popen(qemu_argv(spec), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    took = wait_first_byte(run.serial_log, t0)
    for proc in (qemu, *daemons):
        proc.kill()
        proc.wait()
    return took


def main() -> None:
    lab, user, redis = setup("guest-start")
    from django.conf import settings

    from guests import guest_services as gs
    from guests import services
    from guests.runtime.bootspec import read_bootspec
    from guests.runtime.qemu import GuestSpec, RunDir
    from guests.vm_models import Guest
    from tests.guest_helpers import KERNELS, fake_build, make_host, short_dir
    from tests.helpers import sample_settings
    from tests.test_standin_boot import build_guest

    base = short_dir("kb-")
    host = make_host("bench", base)
    config = services.configuration_create(lab=lab, name="bench", user=user,
                                           settings=sample_settings(hostName="bench"))
    assert config.latest is not None
    out = build_guest(base / "b", config.latest.settings)
    build = fake_build(lab, config.latest, user, str(out))
    guest = gs.guest_create(lab=lab, build=build, name="bench", host=host, kernel=host.kernels.get(),
                            memory_mib=512, vcpus=1, extra_cmdline=EARLY, user=user)
    boot = read_bootspec(out)
    kernel = KERNELS[-1]
    spec = GuestSpec(kernel=kernel.image, initrd=boot.initrd, init=boot.init, boot_params=boot.kernel_params,
                     run_dir=RunDir(base / "bare"), memory_mib=512, vcpus=1, accel="tcg", name="bench",
                     ssh_port=None, extra_cmdline=EARLY)
    agent = start([sys.executable, "manage.py", "hostagent", "--host", "bench", "--no-probe"],
                  settings.DATA_DIR / "agent.log")
    time.sleep(3.0)  # Django start-up and the first scan
    run = host.guest_run_dir(guest.pk)
    kdev, bare, crash = [], [], []
    try:
        for _ in range(N):
            (run / "serial.log").unlink(missing_ok=True)  # the last round's
            t0 = time.monotonic()
            gs.guest_start(guest=guest, user=user)
            kdev.append(wait_first_byte(run / "serial.log", t0))
            while Guest.objects.get(pk=guest.pk).state != "running":
                time.sleep(0.005)
            pid = Guest.objects.get(pk=guest.pk).qemu_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            t1 = time.monotonic()
            while Guest.objects.get(pk=guest.pk).state != "crashed":
                time.sleep(0.002)
            crash.append((time.monotonic() - t1) * 1000)
            bare.append(bare_round(spec, kernel.modules_dir.parent))
            time.sleep(0.5)
    finally:
        stop(agent, redis)
        shutil.rmtree(base, ignore_errors=True)
    print(f"start request -> first serial byte, kdevweb (ms): {percentiles(kdev)}")
    print(f"same argv, bare virtiofsd + qemu (ms):          {percentiles(bare)}")
    diffs = sorted(k - b for k, b in zip(kdev, bare))
    print(f"difference per round (ms): {percentiles(diffs)}")
    print(f"QEMU kill -9 -> row says crashed (ms):          {percentiles(crash)}")


if __name__ == "__main__":
    main()
