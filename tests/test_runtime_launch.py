"""guests.runtime.launch and .disks with real QEMU and virtiofsd: a paused guest
(Debian kernel, no boot needed) started by a stand-in for a host agent that is
then killed, adopted by a new owner, and its processes cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guests.runtime.disks import DiskError, create_argv, create_disk, disk_info
from guests.runtime.kernel import debian_kernels
from guests.runtime.launch import AdoptError, LaunchError, adopt_guest, start_guest
from guests.runtime.qemu import GuestSpec, RunDir
from guests.runtime.qmp import QMPClient
from guests.runtime.virtiofsd import VIRTIOFSD

ROOT = Path(__file__).resolve().parent.parent
KERNELS = debian_kernels()
needs_host = pytest.mark.skipif(
    not KERNELS or not os.access(VIRTIOFSD, os.X_OK) or os.geteuid() != 0,
    reason="needs a Debian kernel in /boot, /usr/lib/qemu/virtiofsd and root",
)

# A host agent in miniature: starts one paused guest, reports, then waits
# to be killed (as `kill -9` of the agent, or RQ killing a job's group).
AGENT = """
import json, sys, time
from pathlib import Path
from guests.runtime.launch import ShareSource, start_guest
from guests.runtime.qemu import Disk, GuestSpec, RunDir, Share
kernel, initrd, tmp = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
run = RunDir(tmp / "run")
spec = GuestSpec(kernel=kernel, initrd=initrd, init="/nix/store/x/init", run_dir=run, memory_mib=256, vcpus=1,
                 paused=True, disks=(Disk(tmp / "scratch.qcow2", serial="scratch0"),),
                 shares=(Share("src", run.virtiofsd_socket("src")),))
guest = start_guest(spec, modules_root=tmp / "modules", store=tmp / "store",
                    shares={"src": ShareSource(tmp / "src", read_only=True)})
print(json.dumps({"qemu": guest.qemu.pid, "virtiofsd": [d.proc.pid for d in guest.virtiofsds]}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def orphaned_guest(tmp_path: Path) -> Iterator[tuple[RunDir, dict]]:
    """A paused guest whose starter was killed with its whole process group."""
    for name in ("modules", "store", "src"):
        (tmp_path / name).mkdir()
    create_disk(tmp_path / "scratch.qcow2", 64)
    kernel = KERNELS[-1]
    initrd = Path(f"/boot/initrd.img-{kernel.version}")
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(kernel.image), str(initrd), str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    assert agent.stdout is not None
    line = agent.stdout.readline()
    if not line:
        agent.wait(10)
        pytest.fail(f"agent failed: {agent.stderr.read() if agent.stderr else ''}")
    pids = json.loads(line)
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(10)
    for stream in (agent.stdout, agent.stderr):
        if stream is not None:
            stream.close()
    yield RunDir(tmp_path / "run"), pids
    for pid in [pids["qemu"], *pids["virtiofsd"]]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@needs_host
def test_agent_killed_guest_keeps_running_and_is_adopted(orphaned_guest) -> None:
    run, pids = orphaned_guest
    time.sleep(0.3)
    assert alive(pids["qemu"]) and all(alive(pid) for pid in pids["virtiofsd"])
    guest = adopt_guest(run)
    assert guest is not None and guest.qemu.pid == pids["qemu"]
    assert sorted(guest.virtiofsds) == ["modules", "src", "store"]
    assert guest.qmp.execute("query-status")["status"] == "prelaunch"
    serial = guest.qmp.execute("qom-get", {"path": "/machine/peripheral/vdisk0", "property": "serial"})
    assert serial == "scratch0"
    # A second start into the same run dir is refused and disturbs nothing.
    spec = GuestSpec(kernel=KERNELS[-1].image, initrd=Path(f"/boot/initrd.img-{KERNELS[-1].version}"),
                     init="/nix/store/x/init", run_dir=run, memory_mib=256, paused=True)
    with pytest.raises(LaunchError, match=f"already running \\(pid {pids['qemu']}\\)"):
        start_guest(spec, modules_root=run.path.parent / "modules", store=run.path.parent / "store")
    assert run.virtiofsd_socket("store").is_socket() and guest.qemu.alive()
    assert guest.qmp.execute("query-status")["status"] == "prelaunch"
    # QEMU serves one QMP client: a second owner is refused, clearly.
    with pytest.raises(AdoptError, match="does not answer"):
        adopt_guest(run, timeout=1)
    guest.stop(grace=5)
    assert wait_gone([pids["qemu"], *pids["virtiofsd"]], 5)
    left = sorted(p.name for p in run.path.iterdir())
    assert not [name for name in left if name.endswith((".pid", ".sock"))], left
    assert adopt_guest(run) is None


@needs_host
def test_kill_9_of_qemu_takes_its_virtiofsd_down(orphaned_guest) -> None:
    run, pids = orphaned_guest
    with QMPClient.connect(run.qmp_socket) as qmp:
        assert qmp.execute("query-status")["status"] == "prelaunch"
    os.kill(pids["qemu"], signal.SIGKILL)
    started = time.monotonic()
    # Each virtiofsd ends when QEMU's end of its socket closes.
    assert wait_gone(pids["virtiofsd"], 5), "virtiofsd outlived QEMU"
    assert time.monotonic() - started < 2
    assert adopt_guest(run) is None  # the new owner records a crash


def test_create_disk(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    create_disk(disk, 2048)
    info = disk_info(disk)
    assert info.format == "qcow2" and info.virtual_mib == 2048 and info.actual_bytes < 2 * 1024 * 1024
    with pytest.raises(DiskError, match="never overwritten"):
        create_disk(disk, 10)
    create_disk(tmp_path / "r.img", 1, "raw")
    assert disk_info(tmp_path / "r.img").format == "raw"
    with pytest.raises(DiskError, match="not a directory"):
        create_disk(tmp_path / "missing" / "d.qcow2", 10)
    with pytest.raises(DiskError, match="cannot read"):
        disk_info(tmp_path / "nothing.qcow2")
    for size in (0, 17 * 1024 * 1024):
        with pytest.raises(DiskError, match="between 1 MiB"):
            create_argv(tmp_path / "x", size)
    with pytest.raises(DiskError, match="absolute"):
        create_argv(Path("x.qcow2"), 1)
    with pytest.raises(DiskError, match="format"):
        create_argv(tmp_path / "x", 1, "vmdk")  # type: ignore[arg-type]
