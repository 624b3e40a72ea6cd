# mounts.storage: declares nixos-flake.storage."<mountPoint>" =
#   { device; fsType; options; mkfsArgs; autoFormat; }
# (only when imported, as upstream). Each entry becomes a file system; with
# mkfsArgs a oneshot unit formats an empty device before the mount. The one
# assertion upstream has: autoFormat and mkfsArgs are mutually exclusive.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.nixos-flake.storage;
  str = description: mkOption { type = types.str; inherit description; };
  strs = description: mkOption { type = types.listOf types.str; default = [ ]; inherit description; };
  drive = types.submodule {
    options = {
      device = str "The block device (required).";
      fsType = str "File system type for mount(8) and mkfs(8) (required).";
      options = strs "Extra mount(8) options.";
      mkfsArgs = strs "Arguments for `mkfs --type <fsType>` on an empty device; excludes autoFormat.";
      autoFormat = mkOption {
        type = types.bool;
        default = false;
        description = "Let NixOS format an empty device with default arguments; excludes mkfsArgs.";
      };
    };
  };
  # systemd's path escaping, enough for /dev/... and mount points.
  unitName = path: let p = lib.removePrefix "/" path; in
    if p == "" then "-" else builtins.replaceStrings [ "/" "-" ] [ "-" "\\x2d" ] p;
in
{
  options.nixos-flake.storage = mkOption {
    type = types.attrsOf drive;
    default = { };
    description = "Block-device mounts, keyed by mount point.";
  };

  config = {
    assertions = lib.mapAttrsToList (mountPoint: d: {
      assertion = !(d.autoFormat && d.mkfsArgs != [ ]);
      message = "nixos-flake.storage.\"${mountPoint}\": autoFormat and mkfsArgs are mutually exclusive; set only one.";
    }) cfg;

    fileSystems = lib.mapAttrs (_: d:
      { inherit (d) device fsType autoFormat; }
      // lib.optionalAttrs (d.options != [ ]) { inherit (d) options; })
      cfg;

    systemd.services = lib.listToAttrs (lib.mapAttrsToList (mountPoint: d: {
      name = "format-${unitName d.device}";
      value = {
        description = "Format ${d.device} for ${mountPoint}";
        wantedBy = [ "${unitName mountPoint}.mount" ];
        before = [ "${unitName mountPoint}.mount" ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = lib.escapeShellArgs ([ "mkfs" "--type" d.fsType ] ++ d.mkfsArgs ++ [ d.device ]);
        };
      };
    }) (lib.filterAttrs (_: d: d.mkfsArgs != [ ]) cfg));
  };
}
