# profiles.controller: declares nixos-flake.controller.enable (only when
# imported, as upstream); when true the host builds kernels, runs Ansible and
# provisions guests with libvirt. Without enable it is a silent no-op.
# Upstream composes it on the libvirt backend.
{ config, lib, pkgs, ... }:
let cfg = config.nixos-flake.controller; in
{
  options.nixos-flake.controller.enable = lib.mkEnableOption "the control-node environment";

  config = lib.mkIf cfg.enable {
    environment.systemPackages = with pkgs; [
      # kernel toolchain
      ncurses pkg-config gcc gnumake bison flex bc perl openssl elfutils pahole cpio kmod zstd rsync hostname
      # orchestration
      ansible git qemu-utils virtiofsd python3 python3Packages.pyyaml python3Packages.jinja2
    ];
    virtualisation.libvirtd = {
      enable = true;
      qemu = { runAsRoot = false; vhostUserPackages = [ pkgs.virtiofsd ]; };
    };
    nix.settings.experimental-features = [ "nix-command" "flakes" ];
  };
}
