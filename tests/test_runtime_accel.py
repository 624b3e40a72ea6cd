"""guests.runtime.accel: the KVM probe, with real QEMU and with QEMUs that fail on purpose."""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import pytest

from guests.runtime.accel import AccelProbe, probe_accel, probe_argv, run_probe

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="needs qemu-system-x86_64")


def fake_qemu(tmp_path: Path, script: str) -> str:
    path = tmp_path / "fake-qemu"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_probe_argv_matches_the_launchers_machine(tmp_path: Path) -> None:
    argv = probe_argv("kvm", tmp_path / "d,1.log")
    assert argv[argv.index("-machine") + 1] == "q35"
    assert argv[argv.index("-cpu") + 1] == "host"  # the launcher's CPU model under KVM
    assert f"file,id=dbg,path={tmp_path}/d,,1.log" in argv
    assert probe_argv("tcg", tmp_path / "d.log")[argv.index("-cpu") + 1] == "max"


@needs_qemu
def test_tcg_runs_the_firmware_to_the_end() -> None:
    """Proves the probe's success marker: TCG always works here."""
    worked, why = run_probe("tcg", timeout=10)
    assert worked, why
    assert "ran the firmware to the end" in why


@needs_qemu
def test_probe_answers_within_its_timeout() -> None:
    started = time.monotonic()
    result = probe_accel(timeout=3)
    assert time.monotonic() - started < 8
    assert result.accel in ("kvm", "tcg") and result.reason
    if result.accel == "kvm":
        assert "ran the firmware to the end" in result.reason
    print(f"\naccelerator here: {result.accel} ({result.reason})")


def test_no_kvm_device_means_tcg() -> None:
    result = probe_accel(kvm_device="/nonexistent/kvm")
    assert result.accel == "tcg" and result.reason == "/nonexistent/kvm does not exist"


def test_qemu_aborting_under_kvm_means_tcg(tmp_path: Path) -> None:
    """How QEMU dies on these machines when KVM is forced."""
    qemu = fake_qemu(tmp_path, "echo 'qemu-system-x86_64: ../target/i386/kvm/kvm.c:3231: kvm_buf_set_msrs: "
                                "Assertion `ret == cpu->kvm_msr_buf->nmsrs` failed.' >&2; kill -ABRT $$")
    result = probe_accel(qemu=qemu, kvm_device="/dev/null", timeout=5)
    assert result.accel == "tcg"
    assert "signal 6" in result.reason and "kvm_buf_set_msrs" in result.reason


def test_a_stalled_kvm_guest_means_tcg(tmp_path: Path) -> None:
    qemu = fake_qemu(tmp_path, "exec sleep 30")
    started = time.monotonic()
    result = probe_accel(qemu=qemu, kvm_device="/dev/null", timeout=0.5)
    assert result.accel == "tcg" and "no progress" in result.reason
    assert time.monotonic() - started < 5


def test_a_missing_qemu_means_tcg(tmp_path: Path) -> None:
    result = probe_accel(qemu=str(tmp_path / "no-qemu"), kvm_device="/dev/null")
    assert result.accel == "tcg" and "cannot run" in result.reason


def test_fake_kvm_that_reaches_the_end_of_post(tmp_path: Path) -> None:
    # Writes SeaBIOS's last words where -chardev file,path= points.
    qemu = fake_qemu(tmp_path, 'for a in "$@"; do case "$a" in file,id=dbg,path=*) '
                               'printf "SeaBIOS\\nNo bootable device." > "${a#file,id=dbg,path=}";; esac; done; '
                               "exec sleep 30")
    result = probe_accel(qemu=qemu, kvm_device="/dev/null", timeout=5)
    assert result.accel == "kvm", result.reason


def test_result_round_trips_for_caching() -> None:
    result = AccelProbe(accel="tcg", reason="why", seconds=3.0)
    assert AccelProbe.from_dict(result.as_dict()) == result
    with pytest.raises(ValueError):
        AccelProbe.from_dict({"accel": "hvf"})
