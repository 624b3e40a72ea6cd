"""Render a downstream nixos-flake flake from a configuration's settings.

Django-free on purpose: the renderer is a pure function from a settings dict
to a set of files, so it can be tested (and evaluated by the real ``nix``)
without a database.

Safety rule: user data never becomes Nix syntax. Everything the user typed
lives in ``kdevweb.json`` and is read by ``default.nix`` through
``builtins.fromJSON (builtins.readFile ./kdevweb.json)``. The only user text
that must appear inside Nix code is the flake inputs' URLs (flake inputs have
to be literal attribute sets, they cannot come from a file); those go through
:func:`nix_string`, and are additionally validated by the form. The raw extra
module an operator may write is Nix by definition: it is kept in its own file,
``extra.nix``, imported only when present and clearly marked as such.
"""

from __future__ import annotations

import difflib
import io
import json
import tarfile
from typing import Any

# The nixpkgs release the backends default system.stateVersion to (mkDefault);
# offered as the form's example, written only when the user pins it.
STATE_VERSION = "26.05"
DEFAULT_NIXOS_FLAKE = "github:linux-kdevops/nixos-flake"
# Version of the settings dict (kdevweb.json). 1: the first renderer (wrote
# every monitoring field, a list for blkalgn.ops, always stateVersion);
# 2: only what the user set, see docs/configurations.md.
SCHEMA = 2

BACKENDS = ("imageless", "libvirt")
MODES = ("guest", "baremetal", "controller")
PROFILES = ("devel", "build-tools", "monitoring", "controller")
TEST_SUITES = (
    "blktests",
    "fstests",
    "gitr",
    "ltp",
    "mmtests",
    "pynfs",
    "selftests",
    "sysbench",
)
# Backends default extraGroups themselves; we only set it when the user did.
DEFAULT_EXTRA_GROUPS = {
    "imageless": ["wheel", "kvm"],
    "libvirt": ["wheel", "kvm", "libvirtd"],
}
# nixos-flake.monitoring.* with upstream's types and defaults, for a guest
# that imports profiles.monitoring and so sets monitoring.enable = true
# (sysstat and cpuGovernor default to monitoring.enable upstream).
MONITORING_DEFAULTS: dict[str, dict[str, Any] | Any] = {
    "outputDir": "/var/lib/monitoring/runs/%i",
    "sysstat": {"enable": True, "interval": 5, "maxSamples": 999999},
    "cpuGovernor": {"enable": True},
    "blkalgn": {"enable": False, "disk": "", "ops": ""},
    "biolatency": {"enable": False, "milliseconds": True, "queued": False, "perDisk": False,
                   "perFlag": False, "disk": "", "interval": 30},
}
# blkalgn's ops[] table (upstream's option description); "" traces every op.
BLKALGN_OPS = ("Read", "Write", "Flush", "Discard", "SecureErase", "WriteSame", "WriteZeroes",
               "ZoneReset", "ZoneResetAll", "ZoneOpen", "ZoneClose", "ZoneFinish",
               "SCSIIn", "SCSIOut", "DrvIn", "DrvOut")
# Source overrides as upstream's usage.md documents them: the input is
# `<pkg>-src` except cpupower, which builds from the kernel tree
# (`kernel-src`); fio's overlay patches do not apply to other sources.
SOURCE_INPUT_NAMES = {"cpupower": "kernel-src"}
CLEAR_PATCHES = frozenset({"fio"})


# Sources nix reads from this machine; every other scheme is fetched over the network.
LOCAL_SOURCE_SCHEMES = ("path:", "git+file:", "file:")


def is_remote_source(url: str) -> bool:
    """Whether nix must fetch ``url`` over the network (fails when offline)."""
    return bool(url) and not url.startswith(LOCAL_SOURCE_SCHEMES)


def source_input(pkg: str) -> str:
    """The flake input a package's source override is read from."""
    return SOURCE_INPUT_NAMES.get(pkg, f"{pkg}-src")

_NIX_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def nix_string(value: str) -> str:
    """Return ``value`` as a double-quoted Nix string literal.

    Escapes backslash, double quote, the ``${`` interpolation opener and the
    control characters Nix has escapes for. A ``$`` not followed by ``{`` is
    literal in Nix, and ``$${`` needs no special case: ``$\\${`` reads back
    as ``$${``.
    """
    out = []
    for i, ch in enumerate(value):
        if ch == "$" and value[i + 1 : i + 2] == "{":
            out.append("\\$")
        else:
            out.append(_NIX_ESCAPES.get(ch, ch))
    return '"' + "".join(out) + '"'


def default_settings(*, nixos_flake_url: str, **overrides: Any) -> dict[str, Any]:
    """A complete settings dict with the form's defaults (what kdevweb.json holds)."""
    settings: dict[str, Any] = {
        "schema": SCHEMA,
        "backend": "imageless",
        "mode": "guest",
        "nixosFlakeUrl": nixos_flake_url,
        "hostName": "kdev",
        "user": {"name": "kdev", "extraGroups": None, "authorizedKeys": []},
        "profiles": [],
        "controller": False,
        "monitoring": None,
        "testSuites": [],
        "extraPackages": [],
        "sourceOverrides": {},
        "shares": {},
        "storage": {},
        "memoryMiB": 1024,
        "vcpus": 2,
        "diskSizeMiB": 20480,
        "stateVersion": None,
        "baremetal": None,
    }
    settings.update(overrides)
    return settings


def monitoring_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """``nixos-flake.monitoring`` for a guest with the monitoring profile:
    ``enable = true`` plus only the fields in ``values`` (same nesting as
    MONITORING_DEFAULTS) that differ from upstream's defaults."""
    out: dict[str, Any] = {"enable": True}
    for key, default in MONITORING_DEFAULTS.items():
        if isinstance(default, dict):
            sub = {k: v for k, v in (values.get(key) or {}).items() if k in default and v != default[k]}
            if sub:
                out[key] = sub
        elif key in values and values[key] != default:
            out[key] = values[key]
    return out


def monitoring_values(monitoring: dict[str, Any] | None) -> dict[str, Any]:
    """The inverse: every monitoring field's effective value (defaults filled in)."""
    mon = monitoring or {}
    values: dict[str, Any] = {}
    for key, default in MONITORING_DEFAULTS.items():
        if isinstance(default, dict):
            values[key] = {**default, **{k: v for k, v in (mon.get(key) or {}).items() if k in default}}
        else:
            values[key] = mon.get(key, default)
    return values


def upgrade_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Bring a settings dict of an older schema to the current one.

    Schema 1 (the first renderer) wrote every monitoring field, including
    ``false`` for the ones the user never touched, blkalgn.ops as a list and
    always a stateVersion; none of that was a choice the user made. Its
    untouched booleans become upstream's defaults again, ``ops`` keeps a
    single operation (several, or none, trace all), and stateVersion goes
    back to the backend's default.
    """
    if settings.get("schema", 1) >= SCHEMA:
        return settings
    s = dict(settings)
    s["schema"] = SCHEMA
    s["stateVersion"] = None
    s.setdefault("baremetal", None)
    mon = s.get("monitoring")
    if mon:
        old = {k: (dict(v) if isinstance(v, dict) else v) for k, v in mon.items()}
        ops = old.get("blkalgn", {}).get("ops", "")
        if isinstance(ops, list):
            old.setdefault("blkalgn", {})["ops"] = ops[0] if len(ops) == 1 else ""
        # The old form could not leave these untouched: False meant "not ticked".
        for section, field in (("sysstat", "enable"), ("cpuGovernor", "enable"), ("biolatency", "milliseconds")):
            if old.get(section, {}).get(field) is False:
                old[section].pop(field)
        s["monitoring"] = monitoring_overrides(old)
    return s


def output_name(backend: str) -> str:
    """The ``packages.x86_64-linux`` attribute a backend builds."""
    return "toplevel" if backend == "imageless" else "image"


def settings_json(settings: dict[str, Any]) -> str:
    """Serialise settings deterministically (stable diffs between revisions)."""
    return json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _flake_nix(settings: dict[str, Any], *, title: str) -> str:
    backend = settings["backend"]
    inputs = [
        f"    nixos-flake.url = {nix_string(settings['nixosFlakeUrl'])};",
        '    nixpkgs.follows = "nixos-flake/nixpkgs";',
    ]
    for _pkg, o in sorted(settings["sourceOverrides"].items()):
        # Attribute names are validated to [A-Za-z0-9_-]; quoting them anyway
        # keeps the file valid even if that grammar is ever loosened.
        inputs.append(f"    {nix_string(o['input'])} = {{ url = {nix_string(o['url'])}; flake = false; }};")
    if backend == "imageless":
        output = "      packages.x86_64-linux.toplevel = vm.config.system.build.toplevel;"
    else:
        output = "\n".join(
            [
                "      packages.x86_64-linux.image = import \"${nixpkgs}/nixos/lib/make-disk-image.nix\" {",
                "        inherit (vm) config pkgs;",
                "        inherit (nixpkgs) lib;",
                "        diskSize = settings.diskSizeMiB;",
                '        format = "qcow2";',
                '        partitionTableType = "legacy";',
                "        installBootLoader = true;",
                "      };",
            ]
        )
    return "\n".join(
        [
            "# Rendered by kdevweb: " + " ".join(title.split()),
            "# Guest settings live in kdevweb.json (read by default.nix); build with",
            f"#   nix build path:.#{output_name(backend)}",
            "{",
            '  description = "kdevweb guest";',
            "",
            "  inputs = {",
            *inputs,
            "  };",
            "",
            "  outputs = { self, nixpkgs, nixos-flake, ... }@inputs:",
            "    let",
            "      settings = builtins.fromJSON (builtins.readFile ./kdevweb.json);",
            "      vm = self.nixosConfigurations.vm;",
            "    in {",
            "      nixosConfigurations.vm = nixpkgs.lib.nixosSystem {",
            '        system = "x86_64-linux";',
            "        specialArgs = { inherit inputs nixos-flake; };",
            "        modules = [",
            f"          nixos-flake.nixosModules.backends.{backend}",
            "          nixos-flake.nixosModules.user",
            "          { nixpkgs.overlays = [ nixos-flake.overlays.default ]; }",
            "          ./default.nix",
            "        ];",
            "      };",
            output,
            "    };",
            "}",
            "",
        ]
    )


# default.nix is the same text for every guest: all variation is in the JSON.
DEFAULT_NIX = """\
# Per-guest settings for nixosConfigurations.vm, rendered by kdevweb.
# Everything user-supplied is data in ./kdevweb.json; this file only maps it
# onto nixos-flake modules and options. An option is defined only when the
# module declaring it is imported (the module system rejects a definition of
# an option that does not exist, even an empty one), and only what the user
# chose is written: upstream's defaults stay upstream's.
{ lib, pkgs, inputs, nixos-flake, ... }:
let
  s = builtins.fromJSON (builtins.readFile ./kdevweb.json);
  m = nixos-flake.nixosModules;
  # Plain attrsets, not mkIf: mkIf still defines the option.
  when = cond: attrs: if cond then attrs else { };
in
{
  imports =
    map (p: m.profiles.${p}) s.profiles
    ++ map (t: m.testSuites.${t}) s.testSuites
    ++ lib.optional (s.shares != { }) m.mounts.shares
    ++ lib.optional (s.storage != { }) m.mounts.storage
    ++ lib.optional s.extraModule ./extra.nix;

  networking.hostName = s.hostName;

  nixos-flake =
    { user = { name = s.user.name; } // when (s.user.extraGroups != null) { extraGroups = s.user.extraGroups; }; }
    // when (s.shares != { }) { shares = s.shares; }
    // when (s.storage != { }) { storage = s.storage; }
    // when (s.monitoring != null) { monitoring = s.monitoring; }
    // when s.controller { controller.enable = true; };

  users.users.${s.user.name}.openssh.authorizedKeys.keys = s.user.authorizedKeys;

  environment.systemPackages = map (path: lib.getAttrFromPath path pkgs) s.extraPackages;

  # Package source overrides: the input (flake = false) replaces src.
  nixpkgs.overlays = [
    (final: prev: builtins.mapAttrs
      (pkg: o: prev.${pkg}.overrideAttrs ({ src = inputs.${o.input}; } // when o.clearPatches { patches = [ ]; }))
      s.sourceOverrides)
  ];
}
# Pinned only when the user chose to; otherwise the backend's mkDefault
# (the nixpkgs release) applies.
// when (s.stateVersion != null) { system.stateVersion = s.stateVersion; }
# Baremetal: the machine's own root file system replaces the imageless tmpfs
# root (set with lib.mkImageMediaOverride upstream, hence mkForce), and the
# virtiofs store and modules shares a VM gets do not exist on real hardware.
// when (s.baremetal != null) {
  fileSystems."/" = lib.mkForce ({ device = s.baremetal.rootDevice; fsType = s.baremetal.rootFsType; }
    // when (s.baremetal.rootOptions != [ ]) { options = s.baremetal.rootOptions; });
  fileSystems."/nix/store".enable = false;
  fileSystems."/lib/modules".enable = false;
}
"""

EXTRA_HEADER = (
    "# Extra NixOS module written by an operator in kdevweb. This file is raw Nix,\n"
    "# imported as-is by default.nix; kdevweb does not check what it does.\n"
)


def render_files(settings: dict[str, Any], *, extra_module: str = "", title: str = "guest") -> dict[str, str]:
    """Render the downstream flake for ``settings``.

    ``settings`` is the normalised dict produced by the configuration form
    (see ``guests.forms``). Returns ``{filename: text}``: ``flake.nix``,
    ``default.nix``, ``kdevweb.json`` and, when given, ``extra.nix``.
    """
    if settings.get("backend") not in BACKENDS:
        raise ValueError(f"unknown backend {settings.get('backend')!r}")  # it names a module in flake.nix
    data = upgrade_settings(dict(settings))
    data.setdefault("stateVersion", None)
    data.setdefault("baremetal", None)
    data["extraModule"] = bool(extra_module.strip())
    data["sourceOverrides"] = {pkg: _source(pkg, o) for pkg, o in data["sourceOverrides"].items()}
    files = {
        "flake.nix": _flake_nix(data, title=title),
        "default.nix": DEFAULT_NIX,
        "kdevweb.json": settings_json(data),
    }
    if data["extraModule"]:
        files["extra.nix"] = EXTRA_HEADER + extra_module.rstrip("\n") + "\n"
    return files


def _source(pkg: str, override: str | dict[str, Any]) -> dict[str, Any]:
    """A source override as default.nix reads it (the form stores the URL)."""
    url = override if isinstance(override, str) else override["url"]
    return {"url": url, "input": source_input(pkg), "clearPatches": pkg in CLEAR_PATCHES}


def files_tarball(files: dict[str, str], *, top: str) -> bytes:
    """Pack rendered files into a reproducible ``.tar.gz`` under ``top/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            blob = files[name].encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def write_files(files: dict[str, str], directory: str) -> None:
    """Write rendered files into ``directory`` (which must exist)."""
    import os

    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
            fh.write(text)


def diff_files(a: dict[str, str], b: dict[str, str], *, a_label: str, b_label: str) -> list[str]:
    """Unified diff lines between two revisions' rendered files."""
    lines: list[str] = []
    for name in sorted(set(a) | set(b)):
        lines += difflib.unified_diff(
            a.get(name, "").splitlines(), b.get(name, "").splitlines(),
            f"{a_label}/{name}", f"{b_label}/{name}", lineterm="",
        )
    return lines
