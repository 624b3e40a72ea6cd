# user: the guest's unprivileged account (nixos-flake.user.name, default
# "user"), passwordless sudo, immutable users, root password "root" for the
# console (mkDefault, as upstream).
{ config, lib, ... }:
let cfg = config.nixos-flake.user; in
{
  imports = [ ./user-options.nix ];

  config = {
    users.users.${cfg.name} = {
      isNormalUser = true;
      extraGroups = cfg.extraGroups;
    };
    security.sudo.wheelNeedsPassword = false;
    users.mutableUsers = lib.mkDefault false;
    users.users.root.initialPassword = lib.mkDefault "root";
  };
}
