# mounts.storage: nixos-flake.storage."<mountPoint>" =
#   { device; fsType; options; mkfsArgs; autoFormat; }
# Setting both mkfsArgs and autoFormat is rejected by an assertion.
{ config, lib, ... }:
let
  cfg = config.nixos-flake.storage;
  hasMkfsArgs = s: (s.mkfsArgs or null) != null && (s.mkfsArgs or null) != [ ];
  both = lib.filter (mp: hasMkfsArgs cfg.${mp} && (cfg.${mp}.autoFormat or false)) (lib.attrNames cfg);
in
{
  assertions = map (mp: {
    assertion = false;
    message = "nixos-flake: storage mount ${mp} sets both mkfsArgs and autoFormat; use only one of them";
  }) both;
  fileSystems = lib.mapAttrs (_: s: {
    inherit (s) device fsType;
    options = s.options or [ ];
    autoFormat = s.autoFormat or false;
    formatOptions = lib.concatStringsSep " " (s.mkfsArgs or [ ]);
  }) cfg;
}
