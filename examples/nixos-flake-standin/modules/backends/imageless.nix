# backends.imageless: a system closure booted by QEMU with an external
# kernel, tmpfs root, host /nix/store (tag `store`, read-only) and the
# kernel's /lib/modules (tag `modules`) shared by virtiofs.
{ lib, ... }:
{
  nixos-flake.user.extraGroups = lib.mkDefault [ "wheel" "kvm" ];

  standin.externalKernel = true;
  boot.kernelParams = [ "root=tmpfs" "console=ttyS0,115200" "console=hvc0" ];
  # Loaded in stage 1 from the initrd (dependencies resolved at build time
  # from modules.dep: virtio, virtio_ring, virtio_pci_{legacy,modern}_dev, fuse).
  boot.initrd.kernelModules = [
    "virtio" "virtio_ring" "virtio_pci" "fuse" "virtiofs" "virtio_console"
    "button" "evdev"
  ];
  fileSystems = {
    "/" = { device = "tmpfs"; fsType = "tmpfs"; options = [ "mode=0755" ]; neededForBoot = true; };
    "/nix/store" = { device = "store"; fsType = "virtiofs"; options = [ "ro" ]; neededForBoot = true; };
    "/lib/modules" = { device = "modules"; fsType = "virtiofs"; options = [ "ro" ]; neededForBoot = true; };
  };
}
