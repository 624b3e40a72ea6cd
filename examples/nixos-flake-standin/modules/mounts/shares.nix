# mounts.shares: declares nixos-flake.shares."<mountPoint>" = { tag; options; }
# (only when imported, as upstream) and turns each share into a virtiofs
# file system.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  share = types.submodule {
    options = {
      tag = mkOption {
        type = types.str;
        description = "The virtiofs tag the host's virtiofsd announces (required).";
      };
      options = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra mount(8) options.";
      };
    };
  };
in
{
  options.nixos-flake.shares = mkOption {
    type = types.attrsOf share;
    default = { };
    description = "virtiofs shares, keyed by mount point.";
  };

  config.fileSystems = lib.mapAttrs (_: s:
    { device = s.tag; fsType = "virtiofs"; }
    // lib.optionalAttrs (s.options != [ ]) { inherit (s) options; })
    config.nixos-flake.shares;
}
