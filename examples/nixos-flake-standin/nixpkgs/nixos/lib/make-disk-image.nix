# Stand-in for nixpkgs' nixos/lib/make-disk-image.nix.
#
# HONESTLY NOT BOOTABLE: it creates an EMPTY qcow2 of the requested size with
# the host's qemu-img (no partition table, no file system, no GRUB, no NixOS
# kernel), and links the system closure next to it so the image still
# depends on (and changes with) the configuration. Good for exercising the
# build/artifact/libvirt-definition plumbing offline, not for booting.
# Needs `sandbox = false` (builder "/bin/sh", /usr/bin/qemu-img from the host).
{ config
, pkgs
, lib
, diskSize ? "auto"
, format ? "raw"
, partitionTableType ? "legacy"
, installBootLoader ? true
, name ? "nixos-disk-image"
, baseName ? "nixos"
, ...
}:
let
  sizeMiB = if diskSize == "auto" then 2048 else diskSize;
  ext = if format == "qcow2" then "qcow2" else format;
in
assert lib.elem format [ "qcow2" "raw" ]
  || throw "make-disk-image stand-in: format ${toString format} is not supported (qcow2, raw)";
assert builtins.isInt sizeMiB
  || throw "make-disk-image stand-in: diskSize must be an integer (MiB) or \"auto\"";
builtins.derivation {
  inherit name;
  system = pkgs.system;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  toplevel = config.system.build.toplevel;
  inherit format partitionTableType;
  diskSize = toString sizeMiB;
  installBootLoader = if installBootLoader then "1" else "";
  fileName = "${baseName}.${ext}";
  args = [ "-e" "-c" ''
    echo "kdevweb-standin: == buildPhase =="
    echo "make-disk-image stand-in: ''${diskSize} MiB $format image, partitionTableType=$partitionTableType"
    echo "make-disk-image stand-in: the image is EMPTY and NOT bootable (offline stand-in)"
    mkdir -p "$out/nix-support"
    qemu-img create -q -f "$format" "$out/$fileName" "''${diskSize}M"
    ln -s "$toplevel" "$out/toplevel"
    echo "file $format $out/$fileName" > "$out/nix-support/hydra-build-products"
    echo "kdevweb-standin: == installPhase =="
    qemu-img info "$out/$fileName"
  '' ];
}
