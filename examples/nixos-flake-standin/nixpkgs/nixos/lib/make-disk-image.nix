# Stand-in for nixpkgs' nixos/lib/make-disk-image.nix: a disk image that
# boots FROM ITS OWN DISK, built offline without loop devices or root.
#
# Layout (partitionTableType = "legacy", the only one the stand-in has):
#   MBR with syslinux's mbr.bin in its first 440 bytes (installBootLoader)
#   partition 2, FAT, bootable, at 1 MiB: syslinux (ldlinux.sys/.c32),
#     syslinux.cfg, the kernel and the system's initrd
#   partition 1, ext4, the rest of diskSize: the root file system holding the
#     system closure under /nix/store (filled with `mke2fs -d`, no mount),
#     /dev/vda1 as backends.libvirt's fileSystems."/" says, so files written
#     in the guest survive a reboot.
# Upstream installs GRUB; syslinux is what installs into a FAT partition of
# an image file without a mount. The kernel is the host's Debian kernel
# (the stand-in builds no NixOS kernel) and the initrd is the stand-in's,
# which loads virtio_blk/ext4/virtio_net for this system.
#
# Host tools in the sandbox: /bin and /usr/bin (mtools, syslinux, qemu-img,
# busybox) and /lib (= /usr/lib: syslinux's mbr.bin). sfdisk and mke2fs live
# in /usr/sbin and the kernel in /boot, which the sandbox does not have:
# scripts/setup copies them to /usr/lib/kdevweb-standin/{sbin,boot}, seen as
# /lib/kdevweb-standin in the sandbox.
{ config
, pkgs
, lib
, diskSize ? "auto"
, additionalSpace ? "512M"
, format ? "raw"
, partitionTableType ? "legacy"
, installBootLoader ? true
, name ? "nixos-disk-image"
, baseName ? "nixos"
, ...
}:
let
  ext = if format == "qcow2" then "qcow2" else format;
  toplevel = config.system.build.toplevel;
  bootMiB = 32;
  kernelParams = lib.concatStringsSep " " config.boot.kernelParams;
in
assert lib.elem format [ "qcow2" "raw" ]
  || throw "make-disk-image stand-in: format ${toString format} is not supported (qcow2, raw)";
assert (diskSize == "auto" || builtins.isInt diskSize)
  || throw "make-disk-image stand-in: diskSize must be an integer (MiB) or \"auto\"";
assert (diskSize == "auto" || diskSize >= bootMiB + 16)
  || throw "make-disk-image stand-in: diskSize ${toString diskSize} MiB is too small (at least ${toString (bootMiB + 16)} MiB: ${toString bootMiB} MiB boot partition and a root)";
assert partitionTableType == "legacy"
  || throw "make-disk-image stand-in: partitionTableType ${toString partitionTableType} is not supported (only \"legacy\": MBR, BIOS boot)";
assert config.fileSystems ? "/"
  || throw "make-disk-image stand-in: the configuration has no fileSystems.\"/\" (import backends.libvirt)";
builtins.derivation {
  inherit name;
  system = pkgs.system;
  builder = "/bin/sh";
  args = [ "-e" ./make-disk-image.sh ];
  PATH = "/usr/bin:/bin";
  inherit toplevel format partitionTableType kernelParams;
  exportReferencesGraph = [ "closure" toplevel ];
  diskSize = toString diskSize;
  inherit additionalSpace;
  bootMiB = toString bootMiB;
  rootFsType = config.fileSystems."/".fsType;
  rootDevice = config.fileSystems."/".device;
  installBootLoader = if installBootLoader then "1" else "";
  fileName = "${baseName}.${ext}";
  toolsDirs = "/lib/kdevweb-standin /usr/lib/kdevweb-standin";
}
