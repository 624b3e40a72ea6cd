# mounts.shares: nixos-flake.shares."<mountPoint>" = { tag; options ? []; }
# become virtiofs file systems (mounted after boot, best effort).
{ config, lib, ... }:
{
  fileSystems = lib.mapAttrs (_: share: {
    device = share.tag;
    fsType = "virtiofs";
    options = share.options or [ ];
  }) config.nixos-flake.shares;
}
