"""libvirt guest: start request -> first serial byte, kdevweb versus ``virsh create``.

Usage (as root, after scripts/setup; libvirtd is started if none answers):
    .venv/bin/python bench/libvirt_start.py [N]

Builds the stand-in's libvirt image (a rendered libvirt guest, real nix) and
a guest of it on a host with ``qemu:///system``, then N rounds:
- kdevweb: ``guest_start`` (the service the Start button calls) -> the host
  agent (woken through Redis) -> overlay check, define, start through
  libvirt-python -> the first byte in the serial log (virtlogd's file;
  SYSLINUX prints first, from the guest's own disk); then ``virsh destroy``
  behind kdevweb's back -> the row says ``crashed`` (libvirt's event);
- virsh: ``virsh create`` of the same domain XML (another name, a fresh
  overlay made before the clock starts) -> the first byte in its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import percentiles, setup, start, stop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def wait_first_byte(path: Path, t0: float, timeout: float = 60.0) -> float:
    while True:
        try:
            if path.stat().st_size > 0:
                return (time.monotonic() - t0) * 1000
        except FileNotFoundError:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no serial output in {path}")
        time.sleep(0.002)


def main() -> None:
    lab, user, redis = setup("libvirt-start")
    from django.conf import settings

    from guests import guest_services as gs
    from guests import libvirt_agent, services
    from guests.runtime import libvirt as lv
    from guests.vm_models import Guest, Host
    from tests.guest_helpers import fake_build, make_host, short_dir
    from tests.libvirt_helpers import URI, ensure_libvirtd
    from tests.test_libvirt_guests import build_image, lv_settings

    why = ensure_libvirtd()
    if why:
        sys.exit(f"libvirtd: {why}")
    base = short_dir("kbl-")
    os.chmod(base, 0o711)
    host_name = f"bench{uuid.uuid4().hex[:4]}"
    host = make_host(host_name, base)
    Host.objects.filter(pk=host.pk).update(libvirt_uri=URI)
    host.refresh_from_db()
    config = services.configuration_create(lab=lab, name="bench", user=user, settings=lv_settings("bench"))
    assert config.latest is not None
    out = build_image(base / "b", config.latest.settings)
    build = fake_build(lab, config.latest, user, out)
    guest = gs.guest_create(lab=lab, build=build, name="bench", host=host, kernel=host.kernels.get(),
                            memory_mib=256, vcpus=1, user=user)
    agent = start([sys.executable, "manage.py", "hostagent", "--host", host_name, "--no-probe"],
                  settings.DATA_DIR / "agent.log")
    time.sleep(3.0)  # Django start-up, the libvirt connection, the first scan
    log = libvirt_agent.serial_log(guest)
    name = libvirt_agent.domain_name(guest)
    image = Path(out) / "nixos.qcow2"
    kdev, bare, crash = [], [], []
    try:
        for i in range(N):
            log.unlink(missing_ok=True)  # the last round's
            t0 = time.monotonic()
            gs.guest_start(guest=Guest.objects.get(pk=guest.pk), user=user)
            kdev.append(wait_first_byte(log, t0))
            while Guest.objects.get(pk=guest.pk).state != "running":
                time.sleep(0.005)
            subprocess.run(["virsh", "-c", URI, "destroy", name], check=True, capture_output=True)
            t1 = time.monotonic()
            while Guest.objects.get(pk=guest.pk).state != "crashed":
                time.sleep(0.002)
            crash.append((time.monotonic() - t1) * 1000)

            gid = f"bare{i}{uuid.uuid4().hex[:4]}"
            overlay = base / f"{gid}.qcow2"
            lv.create_overlay(image, overlay)
            bare_log = base / f"{gid}.log"
            spec = lv.DomainSpec(name=f"kdevweb-bench-{gid}", guest_id=gid, memory_mib=256, vcpus=1,
                                 overlay=overlay, image=image, network=None, serial_log=bare_log)
            xml = base / f"{gid}.xml"
            xml.write_text(lv.domain_xml(spec))
            t0 = time.monotonic()
            subprocess.run(["virsh", "-c", URI, "create", str(xml)], check=True, capture_output=True)
            bare.append(wait_first_byte(bare_log, t0))
            subprocess.run(["virsh", "-c", URI, "destroy", spec.name], check=False, capture_output=True)
            overlay.unlink(missing_ok=True)
            print(f"round {i}: kdevweb {kdev[-1]:.0f} ms, virsh {bare[-1]:.0f} ms, crashed after "
                  f"{crash[-1]:.0f} ms", flush=True)
    finally:
        gs.guest_delete(guest=Guest.objects.get(pk=guest.pk), user=user)
        deadline = time.monotonic() + 20
        while Guest.objects.filter(pk=guest.pk).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stop(agent, redis)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(libvirt_agent.IMAGE_ROOT / host_name, ignore_errors=True)
    print(f"start request -> first serial byte, kdevweb (ms): {percentiles(kdev)}")
    print(f"virsh create of the same XML (ms):              {percentiles(bare)}")
    print(f"difference per round (ms): {percentiles(sorted(k - b for k, b in zip(kdev, bare)))}")
    print(f"virsh destroy -> row says crashed (ms):          {percentiles(crash)}")


if __name__ == "__main__":
    main()
