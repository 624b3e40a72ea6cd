# backends.libvirt: a qcow2 disk image with its own kernel, ext4 root
# on /dev/vda1, GRUB on /dev/vda, DHCP. (The stand-in image boots with
# syslinux and the host kernel instead; see the README.)
{ config, lib, pkgs, ... }:
{
  imports = [ ../user-options.nix ];

  nixos-flake.user.extraGroups = lib.mkDefault [ "wheel" "kvm" "libvirtd" ];

  system.stateVersion = lib.mkDefault config.system.nixos.release;

  services.openssh = {
    enable = true;
    settings = {
      PermitRootLogin = lib.mkDefault "yes";
      PubkeyAuthentication = true;
      PasswordAuthentication = lib.mkDefault false;
    };
  };

  # What upstream gets from nixpkgs' qemu-guest profile.
  boot.initrd.availableKernelModules = [ "virtio_net" "virtio_pci" "virtio_mmio" "virtio_blk" "virtio_scsi" "9p" "9pnet_virtio" ];
  boot.initrd.kernelModules = [ "virtio_balloon" "virtio_console" "virtio_rng" ];

  boot.loader.grub = { enable = true; device = "/dev/vda"; };
  boot.loader.timeout = lib.mkDefault 1;
  boot.kernelPackages = lib.mkDefault (pkgs.linuxPackages_latest or { });

  fileSystems."/" = { device = "/dev/vda1"; fsType = "ext4"; };

  networking.useDHCP = lib.mkDefault true;
  virtualisation.libvirtd.enable = lib.mkDefault false;
  time.timeZone = lib.mkDefault "UTC";
  i18n.defaultLocale = lib.mkDefault "en_US.UTF-8";

  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 7d";
  };
}
