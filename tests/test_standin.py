"""The offline nixos-flake stand-in, evaluated and built by the real ``nix``.

Renders downstream flakes with :func:`guests.flake.render_files` pointing at
``examples/nixos-flake-standin`` and checks, through ``nix eval`` / ``nix
build`` (offline, no substituters), that every form choice reaches the
NixOS configuration. Needs nix with flakes and ``sandbox = false``.
Run: ``.venv/bin/python -m pytest -p no:django tests/test_standin.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from guests.flake import default_settings, render_files, write_files
from tests.helpers import STANDIN
NIX = shutil.which("nix")
pytestmark = pytest.mark.skipif(NIX is None, reason="nix is not installed")


def nix_env() -> dict[str, str]:
    """Environment for offline nix: no substituters (no 4 s DNS retries)."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = "substituters =\nexperimental-features = nix-command flakes\n"
    return env


def settings(**overrides: Any) -> dict[str, Any]:
    base = {"user": {"name": "kdev", "extraGroups": None, "authorizedKeys": ["ssh-ed25519 AAAAC3Nza test@host"]},
            "profiles": ["devel"], "testSuites": ["fstests"], "extraPackages": [["fio"]]}
    return default_settings(nixos_flake_url=f"path:{STANDIN}", **{**base, **overrides})


def render(directory: Path, s: dict[str, Any], extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_files(render_files(s, extra_module=extra, title="standin test"), str(directory))
    return directory


def nix(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([NIX or "nix", *args], capture_output=True, text=True, env=nix_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nix {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def nix_eval(directory: Path, attr: str, apply: str | None = None) -> Any:
    args = ["eval", "--json", f"path:{directory}#nixosConfigurations.vm.{attr}"]
    if apply:
        args += ["--apply", apply]
    return json.loads(nix(*args).stdout)


def nix_build(directory: Path, output: str) -> Path:
    """``nix build path:<dir>#<output> --json --out-link <dir>/result``; returns the out path."""
    proc = nix("build", f"path:{directory}#{output}", "--json", "--out-link", str(directory / "result"))
    return Path(json.loads(proc.stdout)[0]["outputs"]["out"])


PKG_NAMES = "ps: map (p: p.pname) ps"


# -- evaluation ---------------------------------------------------------------


def test_imageless_defaults(tmp_path: Path) -> None:
    d = render(tmp_path / "g", settings())
    cfg = nix_eval(d, "config", apply="""c: {
        modules = c.standin.importedModules;
        host = c.networking.hostName;
        user = c.users.users.kdev;
        flakeUser = c.nixos-flake.user;
        params = c.boot.kernelParams;
        nfs = c.services.nfs.server.enable;
        rpcbind = c.services.rpcbind.enable;
        fs = builtins.attrNames c.fileSystems;
        pkgs = map (p: p.pname) c.environment.systemPackages;
      }""")
    assert sorted(cfg["modules"]) == sorted(["backends.imageless", "user", "profiles.devel", "testSuites.fstests"])
    assert cfg["host"] == "kdev"
    assert cfg["flakeUser"] == {"name": "kdev", "extraGroups": ["wheel", "kvm"]}
    assert cfg["user"]["isNormalUser"] is True
    assert cfg["user"]["extraGroups"] == ["wheel", "kvm"]
    assert cfg["user"]["openssh"]["authorizedKeys"]["keys"] == ["ssh-ed25519 AAAAC3Nza test@host"]
    assert cfg["params"] == []  # as upstream: the launcher passes root=tmpfs, consoles and init=
    assert cfg["nfs"] is True and cfg["rpcbind"] is True  # fstests
    assert cfg["fs"] == ["/", "/lib/modules", "/nix/store"]
    assert {"fio", "gdb", "git", "xfstests", "xfsprogs"} <= set(cfg["pkgs"])


def test_libvirt_extra_groups_default_and_explicit(tmp_path: Path) -> None:
    d = render(tmp_path / "lv", settings(backend="libvirt", profiles=[], testSuites=[]))
    assert nix_eval(d, "config.standin.importedModules") == ["backends.libvirt", "user"]
    assert nix_eval(d, "config.nixos-flake.user.extraGroups") == ["wheel", "kvm", "libvirtd"]
    assert nix_eval(d, "config.fileSystems./.device") == "/dev/vda1"
    user = {"name": "ops", "extraGroups": ["wheel"], "authorizedKeys": []}
    for backend in ("libvirt", "imageless"):
        d = render(tmp_path / f"set-{backend}", settings(backend=backend, user=user))
        assert nix_eval(d, "config.users.users.ops.extraGroups") == ["wheel"]


def test_user_name_defaults_to_user(tmp_path: Path) -> None:
    """Upstream default of nixos-flake.user.name, seen through the raw modules."""
    d = tmp_path / "raw"
    d.mkdir()
    (d / "flake.nix").write_text(
        "{ inputs.nixos-flake.url = " + json.dumps("path:" + str(STANDIN)) + ";\n"
        '  inputs.nixpkgs.follows = "nixos-flake/nixpkgs";\n'
        "  outputs = { nixpkgs, nixos-flake, ... }: {\n"
        "    nixosConfigurations.vm = nixpkgs.lib.nixosSystem {\n"
        '      system = "x86_64-linux";\n'
        "      modules = [ nixos-flake.nixosModules.default nixos-flake.nixosModules.user ];\n"
        "    };\n  };\n}\n"
    )
    assert nix_eval(d, "config.nixos-flake.user.name") == "user"
    assert nix_eval(d, "config.users.users.user.extraGroups") == ["wheel", "kvm"]
    # `default` imports backends.imageless and user; `user` again is deduplicated.
    assert nix_eval(d, "config.standin.importedModules") == ["default", "user", "backends.imageless"]


def test_all_profiles_monitoring_and_controller(tmp_path: Path) -> None:
    # Only what differs from upstream's defaults is written (as the renderer does).
    monitoring = {"enable": True, "sysstat": {"interval": 10, "maxSamples": 100},
                  "biolatency": {"enable": True, "perDisk": True, "disk": "vdb"}}
    s = settings(backend="libvirt", mode="controller", profiles=["devel", "build-tools", "monitoring", "controller"],
                 controller=True, monitoring=monitoring, testSuites=[])
    d = render(tmp_path / "ctl", s)
    mods = nix_eval(d, "config.standin.importedModules")
    assert sorted(mods) == sorted(["backends.libvirt", "user", "profiles.devel", "profiles.build-tools",
                                   "profiles.monitoring", "profiles.controller"])
    mon = nix_eval(d, "config.nixos-flake.monitoring")
    # sysstat.enable and cpuGovernor.enable follow monitoring.enable; the rest are upstream defaults.
    assert mon["sysstat"] == {"enable": True, "interval": 10, "maxSamples": 100}
    assert mon["cpuGovernor"] == {"enable": True}
    assert mon["blkalgn"] == {"enable": False, "ops": "", "disk": ""}
    assert mon["biolatency"] == {"enable": True, "milliseconds": True, "queued": False, "perDisk": True,
                                 "perFlag": False, "disk": "vdb", "interval": 30}
    assert nix_eval(d, "config.nixos-flake.controller.enable") is True
    assert nix_eval(d, "config.virtualisation.libvirtd.enable") is True
    units = nix_eval(d, "config.systemd.services", apply="s: builtins.mapAttrs (_: u: u.serviceConfig.ExecStart or null) s")
    assert {"monitor-sysstat@", "monitor-cpu-governor@", "monitor-biolatency@"} <= set(units)
    assert "monitor-blkalgn@" not in units
    assert units["monitor-sysstat@"].endswith("/lib/sa/sadc -S ALL 10 100 /var/lib/monitoring/runs/%i/sysstat/sa-current")
    assert units["monitor-biolatency@"].endswith("biolatency-libbpf --milliseconds -D -d vdb --timestamp 30")
    names = set(nix_eval(d, "config.environment.systemPackages", apply=PKG_NAMES))
    assert {"sysstat", "fastfetch", "ansible", "qemu-utils", "virtiofsd", "gcc", "pahole", "gdb"} <= names
    # The whole thing evaluates (no assertion fails).
    assert nix_eval(d, "config.system.build.toplevel.drvPath").endswith(".drv")


@pytest.mark.parametrize("profile", ["monitoring", "controller"])
def test_profile_without_enable_is_a_silent_no_op(tmp_path: Path, profile: str) -> None:
    """As upstream: importing the profile declares its options and does nothing else."""
    d = render(tmp_path / profile, settings(profiles=[profile]))
    proc = nix("eval", "--raw", f"path:{d}#toplevel.drvPath", check=False)
    assert proc.returncode == 0, proc.stderr
    assert nix_eval(d, f"config.nixos-flake.{profile}.enable") is False
    assert not [u for u in nix_eval(d, "config.systemd.services", apply="builtins.attrNames")
                if u.startswith("monitor-")]
    assert nix_eval(d, "config.virtualisation.libvirtd.enable") is False


def test_test_suites(tmp_path: Path) -> None:
    suites = ["blktests", "fstests", "gitr", "ltp", "mmtests", "pynfs", "selftests", "sysbench"]
    d = render(tmp_path / "suites", settings(profiles=[], testSuites=suites, extraPackages=[]))
    mods = nix_eval(d, "config.standin.importedModules")
    assert sorted(mods) == sorted(["backends.imageless", "user"] + [f"testSuites.{t}" for t in suites])
    names = set(nix_eval(d, "config.environment.systemPackages", apply=PKG_NAMES))
    assert {"blktests", "xfstests", "gitr", "ltp", "mmtests", "pynfs", "kselftests", "sysbench"} <= names
    d2 = render(tmp_path / "ltp", settings(profiles=[], testSuites=["ltp"], extraPackages=[]))
    assert nix_eval(d2, "config.services.nfs.server.enable") is False
    assert nix_eval(d2, "config.environment.systemPackages", apply=PKG_NAMES) == ["coreutils", "ltp"]  # imageless adds coreutils


def test_shares_and_storage(tmp_path: Path) -> None:
    s = settings(
        shares={"/mnt/src": {"tag": "src", "options": ["ro"]}},
        storage={
            "/data": {"device": "/dev/vdb", "fsType": "xfs", "options": ["noatime"], "mkfsArgs": ["-f", "-m", "crc=1"]},
            "/scratch": {"device": "/dev/vdc", "fsType": "ext4", "options": [], "autoFormat": True},
        },
    )
    d = render(tmp_path / "mounts", s)
    assert {"mounts.shares", "mounts.storage"} <= set(nix_eval(d, "config.standin.importedModules"))
    fs = nix_eval(d, "config.fileSystems")
    assert (fs["/mnt/src"]["device"], fs["/mnt/src"]["fsType"], fs["/mnt/src"]["options"]) == ("src", "virtiofs", ["ro"])
    assert (fs["/data"]["device"], fs["/data"]["fsType"], fs["/data"]["options"]) == ("/dev/vdb", "xfs", ["noatime"])
    assert fs["/data"]["autoFormat"] is False
    assert fs["/scratch"]["autoFormat"] is True and fs["/scratch"]["options"] == ["defaults"]  # NixOS' default
    # mkfsArgs become a format unit (skipped by upstream when the device has a file system).
    units = nix_eval(d, "config.systemd.services", apply="s: builtins.mapAttrs (_: u: u.serviceConfig.ExecStart or null) s")
    assert units["format-dev-vdb"] == "mkfs --type xfs -f -m 'crc=1' /dev/vdb"  # lib.escapeShellArgs
    assert nix_eval(d, "config.nixos-flake.shares") == s["shares"]
    # Without shares/storage the mount modules are not imported at all.
    plain = render(tmp_path / "plain", settings())
    assert not {"mounts.shares", "mounts.storage"} & set(nix_eval(plain, "config.standin.importedModules"))


def test_storage_mkfs_args_and_auto_format_rejected(tmp_path: Path) -> None:
    s = settings(storage={"/data": {"device": "/dev/vdb", "fsType": "xfs", "options": [],
                                    "mkfsArgs": ["-f"], "autoFormat": True}})
    d = render(tmp_path / "both", s)
    proc = nix("eval", "--raw", f"path:{d}#toplevel.drvPath", check=False)
    assert proc.returncode != 0
    assert "Failed assertions:" in proc.stderr
    assert 'nixos-flake.storage."/data": autoFormat and mkfsArgs are mutually exclusive' in proc.stderr


def test_extra_packages_paths_and_unknown(tmp_path: Path) -> None:
    d = render(tmp_path / "pk", settings(extraPackages=[["fio"], ["python3Packages", "pytest"], ["trace-cmd"]]))
    names = nix_eval(d, "config.environment.systemPackages", apply="ps: map (p: p.name) ps")
    assert "python3.13-pytest-8.3.5" in names and "trace-cmd-3.3.1" in names
    bad = render(tmp_path / "bad", settings(extraPackages=[["no-such-package"]]))
    proc = nix("eval", "--json", f"path:{bad}#nixosConfigurations.vm.config.environment.systemPackages",
               "--apply", PKG_NAMES, check=False)
    assert proc.returncode != 0 and "cannot find attribute 'no-such-package'" in proc.stderr


def test_source_override_with_local_path_input(tmp_path: Path) -> None:
    src = tmp_path / "fio-src"
    src.mkdir()
    (src / "VERSION").write_text("fio-3.99-local\n")
    d = render(tmp_path / "ov", settings(sourceOverrides={"fio": f"path:{src}"}))
    fio_src = nix_eval(d, "config.environment.systemPackages",
                       apply='ps: map (p: toString p.src) (builtins.filter (p: p.pname == "fio") ps)')
    assert fio_src and all(p.startswith("/nix/store/") for p in fio_src)
    assert (Path(fio_src[0]) / "VERSION").read_text() == "fio-3.99-local\n"
    # Overriding a package the set lacks: like real nixpkgs the overlay is lazy,
    # so only using that package fails; the rest of the system still evaluates.
    bad = render(tmp_path / "ovbad", settings(sourceOverrides={"nosuchpkg": f"path:{src}"}))
    assert nix_eval(bad, "config.system.build.toplevel.drvPath").endswith(".drv")
    proc = nix("eval", "--raw", f"path:{bad}#nixosConfigurations.vm.pkgs.nosuchpkg.name", check=False)
    assert proc.returncode != 0 and "attribute 'nosuchpkg' missing" in proc.stderr


def test_extra_module(tmp_path: Path) -> None:
    extra = '{ lib, pkgs, ... }: {\n  networking.hostName = lib.mkForce "forced";\n' \
            '  environment.systemPackages = [ pkgs.htop ];\n  environment.etc."motd".text = "hello";\n}\n'
    d = render(tmp_path / "x", settings(), extra=extra)
    assert nix_eval(d, "config.networking.hostName") == "forced"
    assert "htop" in nix_eval(d, "config.environment.systemPackages", apply=PKG_NAMES)
    assert nix_eval(d, "config.environment.etc.motd.text") == "hello"


def test_undeclared_option_fails_through_the_flake(tmp_path: Path) -> None:
    """The strict evaluator behind a real downstream flake (what builds use), not only behind --expr."""
    d = render(tmp_path / "undeclared", settings(), extra="{ nixos-flake.shares = { }; }")
    proc = nix("eval", "--raw", f"path:{d}#toplevel.drvPath", check=False)
    assert proc.returncode != 0
    assert "The option `nixos-flake.shares' does not exist." in proc.stderr
    assert "extra.nix" in proc.stderr  # names the file that defined it


def test_revisions_give_different_closures(tmp_path: Path) -> None:
    a = nix_eval(render(tmp_path / "a", settings()), "config.system.build.toplevel.drvPath")
    b = nix_eval(render(tmp_path / "b", settings(hostName="kdev2")), "config.system.build.toplevel.drvPath")
    c = nix_eval(render(tmp_path / "c", settings(extraPackages=[["fio"], ["gdb"]])), "config.system.build.toplevel.drvPath")
    again = nix_eval(render(tmp_path / "a2", settings()), "config.system.build.toplevel.drvPath")
    assert len({a, b, c}) == 3 and a == again


# -- builds -------------------------------------------------------------------


def test_build_imageless_toplevel(tmp_path: Path) -> None:
    d = render(tmp_path / "build", settings(extraPackages=[["fio"], ["python3Packages", "pytest"]]))
    out = nix_build(d, "toplevel")
    assert (d / "result").resolve() == out
    spec = json.loads((out / "boot.json").read_text())
    v1 = spec["org.nixos.bootspec.v1"]
    assert spec["org.nixos.specialisation.v1"] == {}
    assert v1["init"] == f"{out}/init" and v1["initrd"] == f"{out}/initrd" and v1["toplevel"] == str(out)
    assert v1["system"] == "x86_64-linux"
    assert v1["kernelParams"] == []  # the launcher supplies root=tmpfs, the consoles and init=
    assert Path(v1["initrd"]).resolve().stat().st_size > 100_000
    init = Path(v1["init"]).read_text()
    assert init.startswith("#!/nix/store/") and "/bin/busybox sh\n" in init.splitlines()[0] + "\n"
    record = json.loads((out / "etc" / "kdevweb-standin.json").read_text())
    assert record["hostName"] == "kdev"
    assert "python3.13-pytest-8.3.5" in record["systemPackages"]
    assert record["users"][0]["name"] == "kdev"
    assert "kdev:x:1000:" in (out / "etc" / "passwd").read_text()
    assert (out / "sw" / "share" / "kdevweb-standin" / "fio").exists()


def test_build_log_has_phases(tmp_path: Path) -> None:
    host = f"log-{uuid.uuid4().hex[:12]}"  # a configuration never built before
    d = render(tmp_path / "log", settings(hostName=host))
    proc = nix("build", f"path:{d}#toplevel", "--no-link", "-L", "--log-format", "internal-json")  # -L after --log-format would reset it (nix 2.8)
    events = [json.loads(line[5:]) for line in proc.stderr.splitlines() if line.startswith("@nix ")]
    phases = [e["fields"][0] for e in events if e.get("action") == "result" and e.get("type") == 104]
    log_lines = [e["fields"][0] for e in events if e.get("action") == "result" and e.get("type") == 101]
    assert {"configurePhase", "buildPhase", "installPhase"} <= set(phases)
    assert any(f"host name: {host}" in line for line in log_lines)


def test_build_libvirt_image(tmp_path: Path) -> None:
    d = render(tmp_path / "img", settings(backend="libvirt", hostName="lv", diskSizeMiB=64))
    out = nix_build(d, "image")
    qcow = out / "nixos.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(qcow)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * 1024 * 1024
    record = json.loads((out / "toplevel" / "etc" / "kdevweb-standin.json").read_text())
    assert record["hostName"] == "lv" and "backends.libvirt" in record["importedModules"]


def test_fail_build_switch(tmp_path: Path) -> None:
    d = render(tmp_path / "fail", settings(), extra="{ standin.failBuild = true; }")
    proc = nix("build", f"path:{d}#toplevel", "--no-link", "-L", check=False)
    assert proc.returncode != 0
    assert "failing the build on purpose" in proc.stderr
    assert "configurePhase" in proc.stderr  # a few log lines came first
