"""Shared set-up for the guest tests: hosts, kernels, built stand-in guests."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from builds.models import Build, Status
from guests import guest_services, services
from guests.runtime.bootspec import read_bootspec
from guests.runtime.kernel import debian_kernels
from guests.vm_models import Host
from tests.helpers import sample_settings

KERNELS = debian_kernels()


def short_dir(prefix: str = "kg-") -> Path:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path is too deep.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_host(name: str, base: Path, *, budget: int = 4096, roots: list[str] | None = None) -> Host:
    host = Host.objects.create(name=name, run_dir=str(base / name), memory_budget_mib=budget,
                               share_roots="\n".join(roots or []), accel="tcg")
    kernel = KERNELS[-1]
    guest_services.kernel_add(host=host, name="debian", image=str(kernel.image), modules_dir=str(kernel.modules_dir),
                              user=None, is_default=True)
    return host


def fake_build(lab, revision, user, out_path: str, status: str = Status.SUCCEEDED) -> Build:
    """A Build row for an output built outside the worker (the tests' nix build)."""
    bootspec = None
    if Path(out_path, "boot.json").exists():
        boot = read_bootspec(out_path)
        bootspec = {"init": boot.init, "initrd": str(boot.initrd)}
    return Build.objects.create(lab=lab, revision=revision, created_by=user, attr="toplevel", status=status,
                                out_path=out_path, bootspec=bootspec)


def fake_out_path(directory: Path, *, initrd: bool = True) -> str:
    """A directory that looks like a build output to the services (boot.json and files present)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "init").write_text("#!/bin/sh\n")
    if initrd:
        (directory / "initrd").write_text("")
    (directory / "boot.json").write_text(
        '{"org.nixos.bootspec.v1": {"init": "%s/init", "initrd": "%s/initrd", "kernel": "%s/kernel",'
        ' "kernelParams": [], "label": "t", "toplevel": "%s"}}' % (directory, directory, directory, directory))
    return str(directory)


GUEST_SETTINGS = dict(
    profiles=[], testSuites=[],
    storage={"/mnt/scratch": {"device": "/dev/disk/by-id/virtio-scratch0", "fsType": "ext4", "options": [],
                              "mkfsArgs": [], "autoFormat": False}},
    shares={"/mnt/src": {"tag": "src", "options": []}},
)


def config_with_revisions(lab, user, hostnames: list[str]):
    config = services.configuration_create(lab=lab, name="boot-guest", user=user,
                                           settings=sample_settings(hostName=hostnames[0], **GUEST_SETTINGS))
    for name in hostnames[1:]:
        services.revision_create(configuration=config, settings=sample_settings(hostName=name, **GUEST_SETTINGS),
                                 extra_module="", message=name, user=user)
    return config


def cleanup(path: Path) -> None:
    """Remove a test's run tree, first killing whatever a failed test left
    running there (every guest process writes a pid file)."""
    for pid_file in path.rglob("*.pid"):
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    shutil.rmtree(path, ignore_errors=True)
