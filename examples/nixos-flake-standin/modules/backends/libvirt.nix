# backends.libvirt: a qcow2 disk image with its own kernel, ext4 root on
# /dev/vda1, GRUB on /dev/vda, DHCP. (The stand-in image is not bootable.)
{ lib, ... }:
{
  nixos-flake.user.extraGroups = lib.mkDefault [ "wheel" "kvm" "libvirtd" ];

  boot.kernelParams = [ "console=ttyS0,115200" ];
  boot.loader.grub.device = "/dev/vda";
  boot.initrd.kernelModules = [ "virtio_pci" "virtio_blk" "virtio_net" "ext4" "button" "evdev" ];
  networking.useDHCP = true;
  fileSystems."/" = { device = "/dev/vda1"; fsType = "ext4"; neededForBoot = true; };
}
