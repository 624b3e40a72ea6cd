"""libvirt guest start -> first serial byte: kdevweb's runtime versus ``virsh create``.

Usage (as root, after scripts/setup; libvirtd is started if none answers):
    .venv/bin/python bench/libvirt_start.py [N]

Builds the stand-in's libvirt image (a rendered libvirt guest, real nix),
then N rounds, alternating:
- kdevweb: ``guests.runtime.libvirt`` as the host agent uses it: connect,
  look the name up (marker check), define the domain from a DomainSpec,
  start it -> the first byte in the serial log (virtlogd's file; SYSLINUX
  prints first, from the guest's own disk);
- virsh: ``virsh create`` of the same XML (another name and overlay) -> the
  first byte in its serial log.
The per-guest overlay is made before the clock starts on both sides (kdevweb
makes it when the guest is created, not at each start); its cost is
printed on its own. Not yet measured: the web tier -> job -> host agent hop
in front of the runtime (the agent integration is not done).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdevweb.settings")

from guests.runtime import libvirt as lv  # noqa: E402
from tests.libvirt_helpers import URI, ensure_libvirtd  # noqa: E402
from tests.test_standin_image import build_image  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def percentiles(values: list[float]) -> str:
    s = sorted(values)
    p = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return f"p50 {p(0.5):.0f} ms, p95 {p(0.95):.0f} ms, min {s[0]:.0f}, max {s[-1]:.0f}"


def wait_first_byte(path: Path, t0: float, timeout: float = 60.0) -> float:
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_size > 0:
                return (time.monotonic() - t0) * 1000
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise TimeoutError(f"no serial byte in {path}")


def main() -> None:
    why = ensure_libvirtd()
    if why:
        sys.exit(f"libvirtd: {why}")
    work = Path("/tmp") / f"kdevweb-bench-lv-{uuid.uuid4().hex[:6]}"
    work.mkdir(mode=0o711)
    os.chmod(work, 0o711)
    image = build_image(work / "build", 96) / "nixos.qcow2"
    probe_conn = lv.connect(URI)
    network = lv.pick_network(probe_conn)
    probe_conn.close()
    ours: list[float] = []
    bare: list[float] = []
    overlay_ms: list[float] = []
    try:
        for i in range(N):
            for side in (("kdevweb", "virsh") if i % 2 == 0 else ("virsh", "kdevweb")):
                gid = f"b{i}{side[0]}{uuid.uuid4().hex[:4]}"
                overlay = work / f"{gid}.qcow2"
                t = time.monotonic()
                lv.create_overlay(image, overlay)
                overlay_ms.append((time.monotonic() - t) * 1000)
                log = work / f"{gid}.log"
                spec = lv.DomainSpec(name=f"kdevweb-bench-{gid}", guest_id=gid, memory_mib=256, vcpus=1,
                                     overlay=overlay, image=image, network=network, serial_log=log)
                if side == "kdevweb":
                    t0 = time.monotonic()
                    conn = lv.connect(URI)
                    dom = lv.define(conn, spec)
                    lv.start(dom)
                    ours.append(wait_first_byte(log, t0))
                    lv.undefine(dom, overlays=[overlay])
                    conn.close()
                else:
                    xml_path = work / f"{gid}.xml"
                    xml_path.write_text(lv.domain_xml(spec))
                    t0 = time.monotonic()
                    subprocess.run(["virsh", "-c", URI, "create", str(xml_path)], check=True, capture_output=True)
                    bare.append(wait_first_byte(log, t0))
                    subprocess.run(["virsh", "-c", URI, "destroy", spec.name], check=False, capture_output=True)
                    overlay.unlink(missing_ok=True)
                print(f"round {i} {side}: {(ours if side == 'kdevweb' else bare)[-1]:.0f} ms", flush=True)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    diffs = [a - b for a, b in zip(ours, bare)]
    print(f"kdevweb runtime (define + start) -> first serial byte: {percentiles(ours)}")
    print(f"virsh create of the same XML -> first serial byte:     {percentiles(bare)}")
    print(f"per-round difference: {percentiles(diffs)}; mean {sum(diffs) / len(diffs):.0f} ms")
    print(f"overlay creation (qemu-img, once per guest): {percentiles(overlay_ms)}")


if __name__ == "__main__":
    main()
