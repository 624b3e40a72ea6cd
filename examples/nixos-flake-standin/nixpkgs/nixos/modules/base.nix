# Stand-in for the parts of nixpkgs/nixos every configuration gets: the
# ordinary NixOS options kdevweb and nixos-flake touch (with NixOS' defaults)
# and `system.build.toplevel` (see ./system-build.nix for the derivations).
# Undeclared options are accepted by the stand-in evaluator; these
# declarations exist for their defaults.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  opt = default: mkOption { inherit default; };
in
{
  key = "nixpkgs-standin/nixos/modules/base.nix";
  imports = [ ./system-build.nix ];

  options = {
    networking.hostName = opt "nixos";
    networking.useDHCP = opt true;
    system.stateVersion = opt lib.trivial.release;
    system.nixos.label = opt "${lib.trivial.release}-standin";
    system.build = opt { };
    nixpkgs.overlays = opt [ ];
    nixpkgs.config = opt { };
    nixpkgs.hostPlatform = opt "x86_64-linux";

    environment.systemPackages = opt [ ];
    environment.etc = opt { };
    users.users = opt { };
    fileSystems = opt { };
    boot.kernelParams = opt [ ];
    boot.initrd.kernelModules = opt [ ];
    boot.initrd.availableKernelModules = opt [ ];
    boot.loader.grub.device = opt "nodev";

    services.openssh.enable = opt false;
    services.nfs.server.enable = opt false;
    services.rpcbind.enable = opt false;
    services.sysstat.enable = opt false;
    virtualisation.libvirtd.enable = opt false;

    assertions = opt [ ];
    warnings = opt [ ];

    # Stand-in only (not NixOS options):
    standin = {
      importedModules = mkOption {
        default = [ ];
        type = types.listOf types.str;
        description = "Names of the nixos-flake modules imported (each stand-in module adds its own).";
      };
      failBuild = mkOption {
        default = false;
        type = types.bool;
        description = "Make system.build.toplevel fail on purpose (after printing a few log lines).";
      };
      buildSeconds = mkOption {
        default = 0;
        type = types.int;
        description = "Make the build take this many seconds longer (for cancel and timeout tests).";
      };
      logLines = mkOption {
        default = 0;
        type = types.int;
        description = "Make the build print this many extra log lines (for log streaming tests and benchmarks).";
      };
      externalKernel = mkOption {
        default = false;
        type = types.bool;
        description = "The guest boots a kernel supplied by the launcher (imageless).";
      };
      bannerPrefix = mkOption {
        default = "kdevweb-standin";
        type = types.str;
        description = "Prefix of the 'ready' line stage 2 prints on every console.";
      };
    };
  };
}
