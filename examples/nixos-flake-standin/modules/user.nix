# user: the guest's login user (nixos-flake.user.name, default "user").
{ config, lib, ... }:
let cfg = config.nixos-flake.user; in
{
  users.users.${cfg.name} = {
    isNormalUser = true;
    extraGroups = cfg.extraGroups;
  };
  services.openssh.enable = lib.mkDefault true;
}
