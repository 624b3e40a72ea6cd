# backends.imageless: a system closure booted by QEMU with an EXTERNAL
# kernel, tmpfs root, host /nix/store (virtiofs tag `store`) and the
# kernel's /lib/modules (tag `modules`). As upstream: no boot loader, no
# NixOS kernel, no kernel modules in the initrd (the external kernel has
# virtio, virtiofs and tmpfs built in) and no kernel parameters of its own
# (the launcher passes root=tmpfs, the consoles and init=).
# STAND-IN ONLY: standin.loadVirtioModules (default true) makes the
# stand-in's initrd load the host's virtio modules anyway, so Debian's
# modular kernel can boot it offline; see the README.
{ config, lib, pkgs, ... }:
{
  imports = [ ../user-options.nix ];

  nixos-flake.user.extraGroups = lib.mkDefault [ "wheel" "kvm" ];

  # Rebuilt from scratch every time: follow the release being built.
  system.stateVersion = lib.mkDefault config.system.nixos.release;

  services.openssh = {
    enable = true;
    settings = {
      PermitRootLogin = lib.mkDefault "yes";
      PubkeyAuthentication = true;
      PasswordAuthentication = lib.mkDefault false;
    };
  };

  fileSystems."/" = lib.mkImageMediaOverride { fsType = "tmpfs"; options = [ "mode=0755" ]; };
  fileSystems."/nix/store" = { device = "store"; fsType = "virtiofs"; };
  fileSystems."/lib/modules" = { device = "modules"; fsType = "virtiofs"; neededForBoot = true; };

  systemd.services.systemd-remount-fs.enable = lib.mkForce false;

  boot.loader.grub.enable = false;
  boot.kernel.enable = false;
  boot.initrd.systemd.enable = true;
  boot.initrd.systemd.emergencyAccess = true;
  boot.initrd.supportedFilesystems = [ "virtiofs" ];
  boot.initrd.availableKernelModules = lib.mkForce [ ];
  boot.initrd.kernelModules = lib.mkForce [ ];

  # boot.kernelModules still reach systemd-modules-load without a NixOS kernel.
  boot.kernelModules = lib.mkIf (!config.boot.kernel.enable) [ "loop" "atkbd" ];
  environment.etc."modules-load.d/nixos.conf".text = lib.mkIf (!config.boot.kernel.enable)
    (lib.concatStringsSep "\n" config.boot.kernelModules + "\n");
  systemd.services.systemd-modules-load = lib.mkIf (!config.boot.kernel.enable) {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.SuccessExitStatus = "0 1";
  };
  systemd.services."serial-getty@hvc0" = { enable = true; wantedBy = [ "getty.target" ]; };

  # Plain definitions upstream (not mkDefault): another value conflicts.
  users.mutableUsers = false;
  users.users.root.initialPassword = "root";
  networking.hostName = lib.mkDefault "nixos";
  networking.useNetworkd = true;
  networking.firewall.enable = false;
  systemd.network.networks."80-ethernet" = {
    matchConfig.Name = "en*";
    networkConfig.DHCP = "yes";
  };
  systemd.oomd.enable = false;
  nix.enable = false;
  services.lvm.enable = false;
  environment.systemPackages = [ pkgs.coreutils ];

  # What NixOS' minimal profile (imported upstream) does that matters here.
  documentation.enable = lib.mkDefault false;
  documentation.man.enable = lib.mkDefault false;

  standin.externalKernel = true;
}
