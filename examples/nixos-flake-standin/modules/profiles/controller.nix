# profiles.controller: builds kernels, runs Kconfig and Ansible, provisions
# guests; needs nixos-flake.controller.enable = true.
{ config, lib, pkgs, ... }:
let cfg = config.nixos-flake.controller; in
{
  assertions = [{
    assertion = cfg.enable;
    message = "nixos-flake: profiles.controller requires nixos-flake.controller.enable = true";
  }];
  virtualisation.libvirtd.enable = lib.mkIf cfg.enable true;
  environment.systemPackages = lib.optionals cfg.enable (with pkgs; [ ansible git qemu libvirt gnumake ]);
}
