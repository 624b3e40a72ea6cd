# profiles.monitoring: needs nixos-flake.monitoring.enable = true.
{ config, lib, pkgs, ... }:
let cfg = config.nixos-flake.monitoring; in
{
  assertions = [{
    assertion = cfg.enable;
    message = "nixos-flake: profiles.monitoring requires nixos-flake.monitoring.enable = true";
  }];
  services.sysstat.enable = lib.mkIf (cfg.enable && cfg.sysstat.enable) true;
  environment.systemPackages =
    lib.optionals cfg.enable (
      lib.optional cfg.sysstat.enable pkgs.sysstat
      ++ lib.optional cfg.cpuGovernor.enable pkgs.cpupower
      ++ lib.optional cfg.blkalgn.enable pkgs.bpftrace
      ++ lib.optional cfg.biolatency.enable pkgs.bcc);
}
