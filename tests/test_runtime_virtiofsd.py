"""guests.runtime.virtiofsd and launch: argv, read-only shares, process ownership,
and a failed guest start that leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guests.runtime import process
from guests.runtime.launch import LaunchError, ShareSource, start_guest
from guests.runtime.qemu import GuestSpec, RunDir, Share, SpecError
from guests.runtime.shares import ShareError, resolve_share
from guests.runtime.virtiofsd import RO_EXEC, VIRTIOFSD, Virtiofsd, VirtiofsdError, virtiofsd_argv

HAVE_VIRTIOFSD = os.access(VIRTIOFSD, os.X_OK)
needs_virtiofsd = pytest.mark.skipif(not HAVE_VIRTIOFSD or os.geteuid() != 0,
                                     reason="needs /usr/lib/qemu/virtiofsd and root")


def test_argv_for_debians_c_virtiofsd() -> None:
    argv = virtiofsd_argv(socket_path=Path("/run/g/v.sock"), source=Path("/srv/src"), cache="none")
    assert argv == [VIRTIOFSD, "--socket-path=/run/g/v.sock", "-o", "source=/srv/src", "-o", "cache=none",
                    "-o", "sandbox=namespace"]


def test_read_only_runs_under_a_private_read_only_bind_mount() -> None:
    argv = virtiofsd_argv(socket_path=Path("/run/g/v.sock"), source=Path("/nix/store"), read_only=True,
                          python="/usr/bin/python3")
    assert argv[:10] == ["unshare", "--mount", "--propagation", "private", "--", "/usr/bin/python3", "-I", "-S",
                         RO_EXEC, "/nix/store"]
    assert argv[10] == "--" and argv[11] == VIRTIOFSD


@pytest.mark.parametrize("kwargs, message", [
    ({"source": Path("/srv/a,b")}, "comma"),
    ({"source": Path("relative")}, "absolute"),
    ({"socket_path": Path("v.sock")}, "absolute"),
    ({"cache": "sometimes"}, "cache mode"),
    ({"sandbox": "none"}, "sandbox"),
])
def test_bad_arguments_refused(kwargs: dict, message: str) -> None:
    args = {"socket_path": Path("/run/g/v.sock"), "source": Path("/srv/src"), **kwargs}
    with pytest.raises(ValueError, match=message):
        virtiofsd_argv(**args)


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_ro_exec_makes_the_directory_read_only_for_the_program_only(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    script = f"echo x > {shared}/new 2>/dev/null && echo wrote || echo refused"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", "-S",
                           RO_EXEC, str(shared), "--", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "refused", done.stderr
    (shared / "host-side").write_text("the host still writes")  # nothing leaked into our namespace
    assert str(shared) not in Path("/proc/self/mountinfo").read_text()
    usage = subprocess.run([sys.executable, RO_EXEC, str(shared)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage" in usage.stderr


@needs_virtiofsd
@pytest.mark.parametrize("read_only", [False, True])
def test_start_and_stop_a_real_virtiofsd(tmp_path: Path, read_only: bool) -> None:
    (tmp_path / "src").mkdir()
    daemon = Virtiofsd(tag="src", source=tmp_path / "src", socket_path=tmp_path / "v.sock",
                       stderr_path=tmp_path / "v.stderr", pid_path=tmp_path / "v.pid", read_only=read_only)
    (tmp_path / "v.sock").write_text("stale")  # a leftover must not count as "listening"
    daemon.start(timeout=10)
    try:
        assert daemon.proc is not None and daemon.poll() is None
        assert (tmp_path / "v.sock").is_socket()
        record = process.read_pid_file(tmp_path / "v.pid")
        assert record is not None and record.pid == daemon.proc.pid and record.alive()
        assert os.getsid(record.pid) == record.pid
    finally:
        daemon.stop(grace=5)
    assert daemon.poll() is not None
    assert not (tmp_path / "v.sock").exists() and not (tmp_path / "v.pid").exists()


def test_virtiofsd_that_fails_reports_its_words(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    fake = tmp_path / "fake-virtiofsd"
    fake.write_text("#!/bin/sh\necho 'fuse: unknown option(s): sandbox' >&2\nexit 1\n")
    fake.chmod(0o755)
    daemon = Virtiofsd(tag="src", source=tmp_path / "src", socket_path=tmp_path / "v.sock",
                       stderr_path=tmp_path / "v.stderr", binary=str(fake))
    with pytest.raises(VirtiofsdError, match=r"'src' exited 1 before listening: fuse: unknown option"):
        daemon.start(timeout=5)
    with pytest.raises(VirtiofsdError, match="not a directory"):
        Virtiofsd(tag="x", source=tmp_path / "missing", socket_path=tmp_path / "x.sock",
                  stderr_path=tmp_path / "x.stderr").start()


def _spec(tmp_path: Path, **changes) -> GuestSpec:
    return GuestSpec(kernel=tmp_path / "no-such-kernel", initrd=tmp_path / "no-such-initrd",
                     init="/nix/store/x/init", run_dir=RunDir(tmp_path / "run"), **changes)


@needs_virtiofsd
def test_failed_qemu_start_stops_the_virtiofsd_and_says_why(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    with pytest.raises(LaunchError, match=r"QEMU exited 1 at start: .*no-such-kernel"):
        start_guest(_spec(tmp_path), modules_root=modules, store=modules)
    run = RunDir(tmp_path / "run")
    for tag in ("store", "modules"):
        assert not run.virtiofsd_socket(tag).exists() and not run.virtiofsd_pid(tag).exists()
    assert not run.qemu_pid.exists()
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", "processes left behind"
    # Dying before it even creates the QMP socket is noticed at once, not after the timeout.
    started = time.monotonic()
    with pytest.raises(LaunchError, match=r"QEMU exited 1 at start: .*-no-such-option"):
        start_guest(_spec(tmp_path, extra_args=("-no-such-option",)), modules_root=modules, store=modules,
                    timeout=30)
    assert time.monotonic() - started < 10


def test_start_refuses_mismatched_shares_and_bad_specs_before_starting(tmp_path: Path) -> None:
    spec = _spec(tmp_path, shares=(Share("src", tmp_path / "run" / "src.sock"),))
    with pytest.raises(LaunchError, match="share directories given for"):
        start_guest(spec, modules_root=tmp_path, shares={"other": ShareSource(tmp_path)})
    with pytest.raises(SpecError, match="control characters"):
        start_guest(_spec(tmp_path, extra_cmdline="a\nb"), modules_root=tmp_path)
    assert not (tmp_path / "run").exists()


def test_share_paths_stay_under_the_hosts_roots(tmp_path: Path) -> None:
    root = tmp_path / "shares"
    (root / "alice" / "linux").mkdir(parents=True)
    (tmp_path / "shares-other").mkdir()
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "file").write_text("x")
    (root / "a,b").mkdir()
    roots = [root]
    assert resolve_share(str(root / "alice" / "linux"), roots) == root / "alice" / "linux"
    assert resolve_share(str(root), roots) == root
    assert resolve_share(f"{root}/alice/../alice/linux/", roots) == root / "alice" / "linux"
    for bad, message in [
        (str(tmp_path / "shares-other"), "not under an allowed share root"),
        (f"{root}/../secret", "not under an allowed share root"),
        (str(root / "escape"), "not under an allowed share root"),
        ("/", "not under an allowed share root"),
        ("alice/linux", "absolute"),
        ("", "non-empty"),
        (f"{root}/alice\n", "control characters"),
        (str(root / "file"), "not an existing directory"),
        (str(root / "missing"), "not an existing directory"),
        (str(root / "a,b"), "comma"),
    ]:
        with pytest.raises(ShareError, match=message):
            resolve_share(bad, roots)
    with pytest.raises(ShareError, match="allows no share"):
        resolve_share(str(root), [])
