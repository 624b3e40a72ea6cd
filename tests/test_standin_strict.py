"""The stand-in's module system rejects what the real one rejects.

Each rule of the real nixos-flake modules and nixpkgs' module system that a
user can trip over (see ../shared/reference/nixos-flake.md, "Verified against
the real module sources") gets a wrong configuration fed to the stand-in with
the real ``nix eval`` and the error text checked, plus the matching positive
case. The configuration is composed like a downstream flake (backend, user,
overlay, then the module under test, a file) but evaluated through
``nix eval --impure --expr`` on the stand-in's flake outputs directly: no
flake lock and no store copy, so each case takes a fraction of a second.
tests/test_standin.py covers the same modules through rendered flakes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import STANDIN

NIX = shutil.which("nix")
pytestmark = pytest.mark.skipif(NIX is None, reason="nix is not installed")

TOPLEVEL = "config.system.build.toplevel.drvPath"
MONITORING = "nixos-flake.nixosModules.profiles.monitoring"
CONTROLLER = "nixos-flake.nixosModules.profiles.controller"
SHARES = "nixos-flake.nixosModules.mounts.shares"
STORAGE = "nixos-flake.nixosModules.mounts.storage"


def evaluate(tmp_path: Path, module: str, attr: str = TOPLEVEL, *, backend: str | None = "imageless",
             user: bool = True, apply: str | None = None) -> subprocess.CompletedProcess[str]:
    """Evaluate ``vm.<attr>`` of backend + user + overlay + ``module`` (Nix text, kept in a file
    so messages name it, like a downstream default.nix)."""
    path = tmp_path / f"m{len(list(tmp_path.glob('m*.nix')))}.nix"
    path.write_text(module)
    base = [f"nf.nixosModules.backends.{backend}"] if backend else []
    base += ["nf.nixosModules.user"] if user else []
    expr = f"""
      let
        s = {json.dumps(str(STANDIN))};
        np = (import (s + "/nixpkgs/flake.nix")).outputs {{ self = np; }};
        nf = (import (s + "/flake.nix")).outputs {{ self = nf; nixpkgs = np; }};
        vm = np.lib.nixosSystem {{
          system = "x86_64-linux";
          specialArgs = {{ nixos-flake = nf; inputs = {{ }}; }};
          modules = [ {" ".join(base)} {{ nixpkgs.overlays = [ nf.overlays.default ]; }} (/. + {json.dumps(str(path))}) ];
        }};
      in {f"({apply})" if apply else ""} vm.{attr}"""
    env = dict(os.environ)
    env["NIX_CONFIG"] = "substituters =\nexperimental-features = nix-command flakes\n"
    return subprocess.run([NIX or "nix", "eval", "--json", "--impure", "--expr", expr],
                          capture_output=True, text=True, env=env, timeout=120)


def value(tmp_path: Path, module: str, attr: str, **kw: Any) -> Any:
    proc = evaluate(tmp_path, module, attr, **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def error(tmp_path: Path, module: str, attr: str = TOPLEVEL, **kw: Any) -> str:
    proc = evaluate(tmp_path, module, attr, **kw)
    assert proc.returncode != 0, f"expected an evaluation error, got {proc.stdout}"
    return " ".join(proc.stderr.split())  # nix indents continuation lines


def module(imports: str = "", body: str = "") -> str:
    """A module like a rendered default.nix: ``imports`` (Nix expressions) and ``body`` (definitions)."""
    imports_line = f"imports = [ {imports} ];" if imports else ""
    return f"{{ lib, pkgs, nixos-flake, ... }}: {{\n  {imports_line}\n  {body}\n}}\n"


def evaluates(tmp_path: Path, text: str, **kw: Any) -> bool:
    return str(value(tmp_path, text, TOPLEVEL, **kw)).endswith(".drv")


# -- an option exists only when the module declaring it is imported ------------


@pytest.mark.parametrize(
    ("imports", "definition", "option"),
    [
        (SHARES, "nixos-flake.shares = { };", "nixos-flake.shares"),
        (STORAGE, "nixos-flake.storage = { };", "nixos-flake.storage"),
        (MONITORING, "nixos-flake.monitoring.enable = true;", "nixos-flake.monitoring"),
        (CONTROLLER, "nixos-flake.controller.enable = true;", "nixos-flake.controller"),
    ],
)
def test_option_exists_only_with_its_module(tmp_path: Path, imports: str, definition: str, option: str) -> None:
    text = error(tmp_path, module(body=definition))
    assert f"The option `{option}' does not exist. Definition values:" in text
    assert f"- In `{tmp_path}/m0.nix'" in text  # the file that defined it
    # Even an empty definition, even under a false mkIf (nixpkgs checks definitions, not values).
    assert "does not exist" in error(tmp_path, module(body=f"config = lib.mkIf false {{ {definition} }};"))
    # Reading any option fails, not only the toplevel (nixpkgs' _module.check).
    assert "does not exist" in error(tmp_path, module(body=definition), "config.networking.hostName")
    # With the module imported the same definition is fine.
    assert evaluates(tmp_path, module(imports, definition))


def test_other_modules_do_not_declare_each_others_options(tmp_path: Path) -> None:
    everything_else = f"{MONITORING} {CONTROLLER} {STORAGE} nixos-flake.nixosModules.profiles.devel " \
                      "nixos-flake.nixosModules.testSuites.fstests"
    text = error(tmp_path, module(everything_else, 'nixos-flake.shares."/mnt" = { tag = "t"; };'))
    assert "The option `nixos-flake.shares' does not exist" in text


def test_user_options_are_declared_by_both_backends_and_user(tmp_path: Path) -> None:
    body = 'nixos-flake.user.name = "ops";'
    for backend in ("imageless", "libvirt"):
        # A backend alone declares nixos-flake.user.* but creates no account.
        assert value(tmp_path, module(body=body), "config.nixos-flake.user.name", backend=backend, user=False) == "ops"
        assert "ops" not in value(tmp_path, module(body=body), "config.users.users", backend=backend, user=False,
                                  apply="builtins.attrNames")
    # `user` alone declares them too (no backend at all).
    assert value(tmp_path, module(body=body), "config.users.users.ops.isNormalUser", backend=None) is True
    # Both import the same declarations: no "already declared".
    assert value(tmp_path, module(body=body), "config.nixos-flake.user.extraGroups") == ["wheel", "kvm"]


@pytest.mark.parametrize(
    ("definition", "option"),
    [
        ('networking.hostname = "x";', "networking.hostname"),
        ("services.nosuchservice.enable = true;", "services.nosuchservice"),
        ("nixos-flake.users = { };", "nixos-flake.users"),
        ('users.users.kdev.sshKeys = [ "k" ];', "users.users.kdev.sshKeys"),
        ("services.openssh.settings.NoSuchKey = 1;", "services.openssh.settings.NoSuchKey"),
        ("standin.noSuchSwitch = true;", "standin.noSuchSwitch"),
    ],
)
def test_undeclared_nixos_options_are_errors(tmp_path: Path, definition: str, option: str) -> None:
    assert f"The option `{option}' does not exist." in error(tmp_path, module(body=definition))


def test_undeclared_submodule_options_are_errors(tmp_path: Path) -> None:
    text = error(tmp_path, module(SHARES, 'nixos-flake.shares."/mnt/src" = { tag = "src"; readOnly = true; };'))
    assert "The option `nixos-flake.shares.\"/mnt/src\".readOnly' does not exist." in text
    text = error(tmp_path, module(STORAGE, 'nixos-flake.storage."/d" = { device = "/dev/vdb"; fsType = "xfs"; '
                                           'mkfsOptions = [ "-f" ]; };'))
    assert "The option `nixos-flake.storage.\"/d\".mkfsOptions' does not exist." in text


# -- types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imports", "definition", "option", "type_"),
    [
        ("", "nixos-flake.user.name = 3;", "nixos-flake.user.name", "string"),
        ("", 'nixos-flake.user.extraGroups = "wheel";', "nixos-flake.user.extraGroups", "list of string"),
        ("", "nixos-flake.user.extraGroups = [ 1 ];",
         'nixos-flake.user.extraGroups."[definition 1-entry 1]"', "string"),
        (MONITORING, 'nixos-flake.monitoring = { enable = true; blkalgn.ops = [ "Write" ]; };',
         "nixos-flake.monitoring.blkalgn.ops", "string"),
        (MONITORING, 'nixos-flake.monitoring.enable = "yes";', "nixos-flake.monitoring.enable", "boolean"),
        (MONITORING, "nixos-flake.monitoring = { enable = true; sysstat.interval = 0; };",
         "nixos-flake.monitoring.sysstat.interval", "positive integer, meaning >0"),
        (MONITORING, "nixos-flake.monitoring = { enable = true; sysstat.maxSamples = -5; };",
         "nixos-flake.monitoring.sysstat.maxSamples", "positive integer, meaning >0"),
        (MONITORING, 'nixos-flake.monitoring = { enable = true; biolatency.interval = "30"; };',
         "nixos-flake.monitoring.biolatency.interval", "positive integer, meaning >0"),
        (MONITORING, "nixos-flake.monitoring = { enable = true; biolatency.disk = null; };",
         "nixos-flake.monitoring.biolatency.disk", "string"),
        (MONITORING, "nixos-flake.monitoring.outputDir = /tmp;", "nixos-flake.monitoring.outputDir", "string"),
        (CONTROLLER, "nixos-flake.controller.enable = 1;", "nixos-flake.controller.enable", "boolean"),
        (SHARES, 'nixos-flake.shares = [ "/mnt" ];', "nixos-flake.shares", "attribute set of (submodule)"),
        (SHARES, 'nixos-flake.shares."/mnt" = "src";', "nixos-flake.shares.\"/mnt\"", "submodule"),
        (SHARES, 'nixos-flake.shares."/mnt" = { tag = "src"; options = "ro"; };',
         "nixos-flake.shares.\"/mnt\".options", "list of string"),
        (STORAGE, 'nixos-flake.storage."/d" = { device = 5; fsType = "xfs"; };',
         "nixos-flake.storage.\"/d\".device", "string"),
        (STORAGE, 'nixos-flake.storage."/d" = { device = "/dev/vdb"; fsType = "xfs"; autoFormat = "yes"; };',
         "nixos-flake.storage.\"/d\".autoFormat", "boolean"),
        (STORAGE, 'nixos-flake.storage."/d" = { device = "/dev/vdb"; fsType = "xfs"; mkfsArgs = "-f"; };',
         "nixos-flake.storage.\"/d\".mkfsArgs", "list of string"),
        ("", "networking.hostName = 1;", "networking.hostName", "string"),
        ("", "system.stateVersion = 26.05;", "system.stateVersion", "string"),
        ("", 'users.users.user.openssh.authorizedKeys.keys = "ssh-ed25519 AAAA k";',
         "users.users.user.openssh.authorizedKeys.keys", "list of string"),
        ("", 'environment.systemPackages = [ "fio" ];',
         'environment.systemPackages."[definition 1-entry 1]"', "package"),
        ("", "nixpkgs.overlays = [ { } ];", 'nixpkgs.overlays."[definition 2-entry 1]"', "nixpkgs overlay"),
        ("", 'services.mysql.package = "mariadb";', "services.mysql.package", "null or package"),
        ("", 'services.openssh.settings.PermitRootLogin = "maybe";', "services.openssh.settings.PermitRootLogin",
         'one of "yes", "without-password", "prohibit-password", "forced-commands-only", "no"'),
        ("", "standin.buildSeconds = -1;", "standin.buildSeconds", "unsigned integer, meaning >=0"),
        ("", "nixpkgs.config = \"allowUnfree\";", "nixpkgs.config", "attribute set"),
    ],
)
def test_wrong_types_name_option_and_type(tmp_path: Path, imports: str, definition: str, option: str,
                                          type_: str) -> None:
    text = error(tmp_path, module(imports, definition))
    assert f"A definition for option `{option}' is not of type `{type_}'. Definition values:" in text
    assert f"- In `{tmp_path}/m0.nix'" in text


def test_required_submodule_options(tmp_path: Path) -> None:
    """Options without a default must be defined once their entry exists."""
    cases = [
        (SHARES, 'nixos-flake.shares."/mnt" = { options = [ "ro" ]; };', 'nixos-flake.shares."/mnt".tag'),
        (STORAGE, 'nixos-flake.storage."/d" = { fsType = "xfs"; };', 'nixos-flake.storage."/d".device'),
        (STORAGE, 'nixos-flake.storage."/d" = { device = "/dev/vdb"; };', 'nixos-flake.storage."/d".fsType'),
    ]
    for imports, definition, option in cases:
        text = error(tmp_path, module(imports, definition))
        assert f"The option `{option}' was accessed but has no value defined. Try setting the option." in text


def test_conflicting_definitions(tmp_path: Path) -> None:
    text = error(tmp_path, module(body='networking.hostName = "a"; imports = [ { networking.hostName = "b"; } ];')
                 )
    assert "The option `networking.hostName' has conflicting definition values:" in text
    assert "Use `lib.mkForce value` or `lib.mkDefault value`" in text
    # `anything` (freeform-like settings): values of different kinds do not merge.
    text = error(tmp_path, module(body='nix.settings.cores = lib.mkMerge [ 1 "2" ];'))
    assert "The option `nix.settings.cores' has conflicting definitions, in" in text


# -- defaults and priorities --------------------------------------------------

MONITORING_DEFAULTS = {
    "outputDir": "/var/lib/monitoring/runs/%i",
    "sysstat": {"interval": 5, "maxSamples": 999999},
    "cpuGovernor": {},
    "blkalgn": {"enable": False, "disk": "", "ops": ""},
    "biolatency": {"enable": False, "milliseconds": True, "queued": False, "perDisk": False, "perFlag": False,
                   "disk": "", "interval": 30},
}


@pytest.mark.parametrize("enable", [True, False])
def test_monitoring_defaults_follow_upstream(tmp_path: Path, enable: bool) -> None:
    mon = value(tmp_path, module(MONITORING, f"nixos-flake.monitoring.enable = {str(enable).lower()};"),
                "config.nixos-flake.monitoring")
    expected = json.loads(json.dumps(MONITORING_DEFAULTS))
    expected["enable"] = enable
    expected["sysstat"]["enable"] = enable  # default = monitoring.enable
    expected["cpuGovernor"]["enable"] = enable  # default = monitoring.enable
    assert mon == expected


def test_monitoring_following_defaults_can_be_overridden(tmp_path: Path) -> None:
    body = "nixos-flake.monitoring = { enable = true; sysstat.enable = false; biolatency.milliseconds = false; };"
    mon = value(tmp_path, module(MONITORING, body), "config.nixos-flake.monitoring")
    assert mon["sysstat"]["enable"] is False and mon["cpuGovernor"]["enable"] is True
    assert mon["biolatency"]["milliseconds"] is False
    units = value(tmp_path, module(MONITORING, body), "config.systemd.services", apply="builtins.attrNames")
    assert "monitor-sysstat@" not in units and "monitor-cpu-governor@" in units


def test_profiles_default_off(tmp_path: Path) -> None:
    assert value(tmp_path, module(CONTROLLER), "config.nixos-flake.controller.enable") is False
    assert value(tmp_path, module(MONITORING), "config.nixos-flake.monitoring.enable") is False


def test_mount_submodule_defaults(tmp_path: Path) -> None:
    body = 'nixos-flake.shares."/mnt".tag = "t"; nixos-flake.storage."/d" = { device = "/dev/vdb"; fsType = "xfs"; };'
    got = value(tmp_path, module(f"{SHARES} {STORAGE}", body), "config.nixos-flake",
                apply="f: { inherit (f) shares storage; }")
    assert got == {"shares": {"/mnt": {"tag": "t", "options": []}},
                   "storage": {"/d": {"device": "/dev/vdb", "fsType": "xfs", "options": [], "mkfsArgs": [],
                                      "autoFormat": False}}}


def test_user_defaults_and_priorities(tmp_path: Path) -> None:
    groups = "config.users.users.user.extraGroups"
    assert value(tmp_path, module(), "config.nixos-flake.user.name") == "user"
    assert value(tmp_path, module(), groups) == ["wheel", "kvm"]
    assert value(tmp_path, module(), groups, backend="libvirt") == ["wheel", "kvm", "libvirtd"]
    # The backends' value is mkDefault: a plain definition replaces it (no merge)...
    assert value(tmp_path, module(body='nixos-flake.user.extraGroups = [ "video" ];'), groups) == ["video"]
    # ...and mkForce beats a plain definition.
    body = ('nixos-flake.user.extraGroups = [ "video" ]; '
            'imports = [ { nixos-flake.user.extraGroups = lib.mkForce [ "disk" ]; } ];')
    assert value(tmp_path, module(body=body), groups) == ["disk"]
    # Without a backend the option's own default applies.
    assert value(tmp_path, module(), groups, backend=None) == []


def test_state_version_is_the_backends_mkdefault(tmp_path: Path) -> None:
    for backend in ("imageless", "libvirt"):
        assert value(tmp_path, module(), "config.system.stateVersion", backend=backend) == "26.05"
        assert value(tmp_path, module(body='system.stateVersion = "24.11";'), "config.system.stateVersion",
                     backend=backend) == "24.11"


# -- assertions ---------------------------------------------------------------


def test_storage_auto_format_with_mkfs_args_fails_the_toplevel(tmp_path: Path) -> None:
    body = 'nixos-flake.storage."/data" = { device = "/dev/vdb"; fsType = "xfs"; mkfsArgs = [ "-f" ]; autoFormat = true; };'
    text = error(tmp_path, module(STORAGE, body))
    assert "Failed assertions:" in text
    assert 'nixos-flake.storage."/data": autoFormat and mkfsArgs are mutually exclusive' in text
    # Like NixOS assertions: options still evaluate, only the system fails.
    assert value(tmp_path, module(STORAGE, body), 'config.nixos-flake.storage."/data".autoFormat') is True
    for ok in ('mkfsArgs = [ "-f" ];', "autoFormat = true;", 'mkfsArgs = [ ]; autoFormat = true;'):
        assert evaluates(tmp_path, module(STORAGE, f'nixos-flake.storage."/data" = {{ device = "/dev/vdb"; '
                                                   f'fsType = "xfs"; {ok} }};'))


@pytest.mark.parametrize("imports", [MONITORING, CONTROLLER, f"{MONITORING} {CONTROLLER}"])
def test_profiles_without_enable_are_silent_no_ops(tmp_path: Path, imports: str) -> None:
    assert evaluates(tmp_path, module(imports))
    failing = "as: builtins.length (builtins.filter (a: !a.assertion) as)"
    assert value(tmp_path, module(imports), "config.assertions", apply=failing) == 0


def test_assertions_option_fails_the_toplevel_like_nixos(tmp_path: Path) -> None:
    body = 'assertions = [ { assertion = false; message = "first"; } { assertion = true; message = "no"; } ];'
    text = error(tmp_path, module(body=body))
    assert "Failed assertions: - first" in text and "- no" not in text


# -- the stand-in switch for booting offline ----------------------------------


def test_initrd_modules_only_behind_the_standin_switch(tmp_path: Path) -> None:
    # As upstream, the imageless backend forces both initrd module lists empty and sets no kernel params.
    got = value(tmp_path, module(), "config.boot", apply="b: [ b.initrd.kernelModules b.initrd.availableKernelModules b.kernelParams ]")
    assert got == [[], [], []]
    # The stand-in's initrd loads the host's virtio modules only because standin.loadVirtioModules is true.
    initrd = "config.system.build.initrd.kernelModules"
    assert "virtiofs" in value(tmp_path, module(), initrd).split()
    assert value(tmp_path, module(body="standin.loadVirtioModules = false;"), initrd) == ""
    # A user's lib.mkForce-free definition cannot add modules either (upstream's mkForce [ ] wins).
    assert value(tmp_path, module(body='boot.initrd.kernelModules = [ "xfs" ];'), "config.boot.initrd.kernelModules") == []


def test_read_only_store_only_behind_the_standin_switch(tmp_path: Path) -> None:
    # As upstream, fileSystems."/nix/store" has no "ro"; the stand-in's stage 1 adds it (standin.readOnlyStore).
    assert value(tmp_path, module(), 'config.fileSystems."/nix/store".options') == ["defaults"]
    stage1 = "config.system.build.initrd.stage1"
    assert "mount_fs virtiofs ro store /newroot/nix/store" in value(tmp_path, module(), stage1)
    assert "mount_fs virtiofs '' store /newroot/nix/store" in value(
        tmp_path, module(body="standin.readOnlyStore = false;"), stage1)


# -- the evaluator itself -----------------------------------------------------


def test_declaring_an_option_twice_is_an_error(tmp_path: Path) -> None:
    body = "options.networking.hostName = lib.mkOption { type = lib.types.str; default = \"x\"; };"
    text = error(tmp_path, f"{{ lib, ... }}: {{ {body} }}\n")
    assert "The option `networking.hostName' in" in text and "is already declared in" in text


def test_full_form_module_with_stray_attributes(tmp_path: Path) -> None:
    text = error(tmp_path, '{ config = { networking.hostName = "a"; }; services.openssh.enable = true; }\n')
    assert "has an unsupported attribute `services'" in text


def test_mkif_condition_must_be_a_bool(tmp_path: Path) -> None:
    assert "mkIf called with a non-Boolean condition" in error(
        tmp_path, module(body='networking.hostName = lib.mkIf "yes" "a";'))


def test_mkif_false_removes_attrs_entries(tmp_path: Path) -> None:
    body = 'nixos-flake.shares = { "/a" = { tag = "a"; }; "/b" = lib.mkIf false { tag = "b"; }; };'
    assert value(tmp_path, module(SHARES, body), "config.nixos-flake.shares", apply="builtins.attrNames") == ["/a"]


# -- NixOS' user assertions (what a guest user's name can collide with) --------


@pytest.mark.parametrize("name", ["fsgqa", "fsgqa2", "123456-fsgqa", "daemon", "bin"])
def test_user_named_like_an_fstests_user_fails(tmp_path: Path, name: str) -> None:
    text = error(tmp_path, module("nixos-flake.nixosModules.testSuites.fstests",
                                  f'nixos-flake.user.name = "{name}";'))
    assert "Failed assertions:" in text
    assert f"Exactly one of users.users.{name}.isSystemUser and users.users.{name}.isNormalUser must be set." in text
    # Without fstests the name is just a name.
    assert evaluates(tmp_path, module(body=f'nixos-flake.user.name = "{name}";'))


def test_user_named_root_fails_as_upstream(tmp_path: Path) -> None:
    # `user` defines users.users.<name> and users.users.root in one attrset (as upstream).
    assert "dynamic attribute 'root' already defined" in error(tmp_path, module(body='nixos-flake.user.name = "root";'))


def test_user_and_group_ids_must_be_unique(tmp_path: Path) -> None:
    assert "UIDs and GIDs must be unique!" in error(tmp_path, module(body="users.groups.extra.gid = 100;"))
    assert "users.users.svc.group is unset." in error(tmp_path, module(body="users.users.svc.isSystemUser = true;"))
    assert evaluates(tmp_path, module(body='users.users.svc = { isSystemUser = true; group = "svc"; };'))
    assert value(tmp_path, module(), "config.users.users.user.group") == "users"


def test_imageless_plain_definitions_conflict_as_upstream(tmp_path: Path) -> None:
    """Upstream's imageless backend sets these at normal priority: another value needs mkForce."""
    for body in ('users.users.root.initialPassword = "secret";', "users.mutableUsers = true;",
                 "services.lvm.enable = true;", "nix.enable = true;"):
        assert "has conflicting definition values" in error(tmp_path, module(body=body))
        assert evaluates(tmp_path, module(body=body.replace("= ", "= lib.mkForce (").replace(";", ");")))
    # fstests forces lvm on (mkForce) over the backend's plain false.
    assert value(tmp_path, module("nixos-flake.nixosModules.testSuites.fstests"), "config.services.lvm.enable") is True
    # hostName is only a mkDefault there.
    assert value(tmp_path, module(body='networking.hostName = "vm";'), "config.networking.hostName") == "vm"


# -- what upstream's own `nix flake check` composes evaluates here too ---------

SUITES = ["blktests", "fstests", "gitr", "ltp", "mmtests", "pynfs", "selftests", "sysbench"]


@pytest.mark.parametrize("suite", SUITES)
def test_upstream_check_compositions_evaluate(tmp_path: Path, suite: str) -> None:
    # checks.imageless-<suite>: imageless + user + monitoring (enabled) + the suite.
    assert evaluates(tmp_path, module(f"{MONITORING} nixos-flake.nixosModules.testSuites.{suite}",
                                      "nixos-flake.monitoring.enable = true;"))


def test_upstream_backend_checks_evaluate(tmp_path: Path) -> None:
    # checks.imageless / checks.libvirt: a backend alone; checks.controller: libvirt + controller;
    # checks.devel: imageless + devel.
    assert evaluates(tmp_path, module(), user=False)
    assert evaluates(tmp_path, module(), backend="libvirt", user=False)
    assert evaluates(tmp_path, module(CONTROLLER, "nixos-flake.controller.enable = true;"), backend="libvirt",
                     user=False)
    assert evaluates(tmp_path, module("nixos-flake.nixosModules.profiles.devel"), user=False)
