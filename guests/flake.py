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

STATE_VERSION = "26.05"
DEFAULT_NIXOS_FLAKE = "github:linux-kdevops/nixos-flake"

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
        "stateVersion": STATE_VERSION,
    }
    settings.update(overrides)
    return settings


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
    for pkg, url in sorted(settings["sourceOverrides"].items()):
        # Attribute names are validated to [A-Za-z0-9_-]; quoting them anyway
        # keeps the file valid even if that grammar is ever loosened.
        inputs.append(f"    {nix_string(pkg + '-src')} = {{ url = {nix_string(url)}; flake = false; }};")
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
# onto nixos-flake modules and options.
{ lib, pkgs, inputs, nixos-flake, ... }:
let
  s = builtins.fromJSON (builtins.readFile ./kdevweb.json);
  m = nixos-flake.nixosModules;
in
{
  imports =
    map (p: m.profiles.${p}) s.profiles
    ++ map (t: m.testSuites.${t}) s.testSuites
    ++ lib.optional (s.shares != { }) m.mounts.shares
    ++ lib.optional (s.storage != { }) m.mounts.storage
    ++ lib.optional s.extraModule ./extra.nix;

  networking.hostName = s.hostName;
  system.stateVersion = s.stateVersion;

  nixos-flake = {
    user = { name = s.user.name; }
      // lib.optionalAttrs (s.user.extraGroups != null) { extraGroups = s.user.extraGroups; };
    shares = s.shares;
    storage = s.storage;
  }
  // lib.optionalAttrs (s.monitoring != null) { monitoring = s.monitoring; }
  // lib.optionalAttrs s.controller { controller.enable = true; };

  users.users.${s.user.name}.openssh.authorizedKeys.keys = s.user.authorizedKeys;

  environment.systemPackages = map (path: lib.getAttrFromPath path pkgs) s.extraPackages;

  # Package source overrides: inputs.<pkg>-src (flake = false) replaces src.
  nixpkgs.overlays = [
    (final: prev: builtins.mapAttrs
      (pkg: _: prev.${pkg}.overrideAttrs { src = inputs."${pkg}-src"; })
      s.sourceOverrides)
  ];
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
    data = dict(settings)
    data["extraModule"] = bool(extra_module.strip())
    data.setdefault("stateVersion", STATE_VERSION)
    files = {
        "flake.nix": _flake_nix(data, title=title),
        "default.nix": DEFAULT_NIX,
        "kdevweb.json": settings_json(data),
    }
    if data["extraModule"]:
        files["extra.nix"] = EXTRA_HEADER + extra_module.rstrip("\n") + "\n"
    return files


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
