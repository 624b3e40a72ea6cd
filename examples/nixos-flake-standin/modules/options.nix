# The `nixos-flake.*` options, declared once and imported by every stand-in
# module (deduplicated by path), so a downstream default.nix may set
# nixos-flake.shares/storage/monitoring/controller whatever it imports.
# Defaults follow upstream (see /work/shared/reference/nixos-flake.md).
{ lib, ... }:
let
  opt = default: lib.mkOption { inherit default; };
in
{
  options.nixos-flake = {
    user = {
      name = opt "user";
      # The backends set the real default (mkDefault) when this is not set.
      extraGroups = opt [ "wheel" ];
    };
    shares = opt { };
    storage = opt { };
    controller.enable = opt false;
    monitoring = {
      enable = opt false;
      outputDir = opt "/var/lib/monitoring/runs/%i";
      sysstat = { enable = opt false; interval = opt 5; maxSamples = opt null; };
      cpuGovernor.enable = opt false;
      blkalgn = { enable = opt false; disk = opt null; ops = opt null; };
      biolatency = {
        enable = opt false;
        milliseconds = opt false;
        queued = opt false;
        perDisk = opt false;
        perFlag = opt false;
        disk = opt null;
        interval = opt 30;
      };
    };
  };
}
