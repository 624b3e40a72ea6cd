# system.build.{toplevel,initrd} of the stand-in: real derivations, built by
# the host's nix with builder "/bin/sh" and host tools (busybox-static, cpio,
# gzip, xz, grep, sed from /bin and /usr/bin). That needs either a sandbox
# exposing those directories (extra-sandbox-paths = /bin /usr/bin /lib /lib64,
# what scripts/setup writes) or `sandbox = false`.
#
# The initrd also copies kernel modules from the host's /lib/modules/*/ at
# build time: the output depends on the host's installed kernels, which nix
# does not know about (delete the initrd path to force a rebuild after
# installing another kernel).
{ config, lib, pkgs, ... }:
let
  inherit (lib) concatStringsSep concatMapStrings escapeShellArg filter mapAttrsToList;
  sh = escapeShellArg;
  out = builtins.placeholder "out";
  hostPath = "/usr/bin:/bin";
  busybox = pkgs.busybox;

  label = config.system.nixos.label;
  hostName = config.networking.hostName;
  nixosFlake = config.nixos-flake or { };
  userName = nixosFlake.user.name or "root";

  # STAND-IN ONLY (standin.loadVirtioModules): what Debian's modular kernel
  # needs in stage 1 to reach the virtiofs store and the consoles. Upstream's
  # imageless initrd has no modules at all (its kernel has them built in).
  standinInitrdModules = lib.optionals config.standin.loadVirtioModules [
    "virtio" "virtio_ring" "virtio_pci" "fuse" "virtiofs" "virtio_console" "button" "evdev"
  ];
  # A disk-image system (no external kernel) has no udev in the stand-in's
  # stage 1, so what NixOS would load on demand (availableKernelModules) and
  # the root file system's driver are loaded up front (ext4 wants crc32c).
  diskRootModules = lib.optionals (!config.standin.externalKernel)
    (config.boot.initrd.availableKernelModules ++ [ "crc32c_generic" "ext4" ]);
  initrdModules = config.boot.initrd.kernelModules ++ diskRootModules ++ standinInitrdModules;

  # users and groups ----------------------------------------------------
  users = mapAttrsToList (name: u: u // { inherit name; }) config.users.users;
  normalUsers = lib.imap0 (i: u: u // { uid = if u.uid != null then u.uid else 1000 + i; })
    (filter (u: u.isNormalUser) users);
  groupNames = lib.unique ([ "wheel" ] ++ lib.sort (a: c: a < c)
    (builtins.concatMap (u: u.extraGroups or [ ]) normalUsers));
  gid = g: if g == "wheel" then 1 else 500 + lib.count (x: x < g) groupNames;
  passwd = concatMapStrings (l: l + "\n") ([ "root:x:0:0:System administrator:/root:/bin/sh" ]
    ++ map (u: "${u.name}:x:${toString u.uid}:100::/home/${u.name}:/bin/sh") normalUsers);
  group = concatMapStrings (l: l + "\n") ([ "root:x:0:" "users:x:100:" ]
    ++ map (g: "${g}:x:${toString (gid g)}:${concatStringsSep ","
      (map (u: u.name) (filter (u: builtins.elem g (u.extraGroups or [ ])) normalUsers))}") groupNames);
  authorizedKeys = concatMapStrings (u: let keys = u.openssh.authorizedKeys.keys or [ ]; in
    lib.optionalString (keys != [ ]) "${u.name}\t${builtins.toJSON keys}\n") normalUsers;

  # file systems --------------------------------------------------------
  # NixOS mounts these in stage 1 whatever their neededForBoot says.
  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
  fileSystems = lib.sort (a: c: a.mountPoint < c.mountPoint) (mapAttrsToList (_: fs: {
    inherit (fs) mountPoint fsType;
    device = if fs.device != null then fs.device else if fs.label != null then "LABEL=${fs.label}" else "none";
    options = concatStringsSep "," (lib.remove "defaults" (fs.options
      ++ lib.optional (fs.mountPoint == "/nix/store" && config.standin.readOnlyStore) "ro"));
    neededForBoot = fs.neededForBoot || builtins.elem fs.mountPoint pathsNeededForBoot;
  }) (lib.filterAttrs (_: fs: fs.enable) config.fileSystems));
  rootFs = lib.findFirst (fs: fs.mountPoint == "/")
    { mountPoint = "/"; device = "tmpfs"; fsType = "tmpfs"; options = "mode=0755"; } fileSystems;
  mountLine = prefix: fs:
    "mount_fs ${sh fs.fsType} ${sh fs.options} ${sh fs.device} ${sh "${prefix}${fs.mountPoint}"}\n";
  bootMounts = mountLine "/newroot" (rootFs // { mountPoint = ""; })
    + concatMapStrings (mountLine "/newroot")
      (filter (fs: fs.neededForBoot && fs.mountPoint != "/") fileSystems);
  lateMounts = concatMapStrings (mountLine "")
    (filter (fs: !fs.neededForBoot && fs.mountPoint != "/") fileSystems);

  # the record of what this configuration asked for ---------------------
  record = {
    standin = "kdevweb offline stand-in for linux-kdevops/nixos-flake (not NixOS)";
    inherit hostName label;
    system = pkgs.system;
    stateVersion = config.system.stateVersion;
    importedModules = config.standin.importedModules;
    nixosFlake = nixosFlake;
    users = map (u: {
      inherit (u) name uid;
      extraGroups = u.extraGroups or [ ];
      authorizedKeys = u.openssh.authorizedKeys.keys or [ ];
    }) normalUsers;
    systemPackages = map (p: p.name) config.environment.systemPackages;
    fileSystems = config.fileSystems;
    kernelParams = config.boot.kernelParams;
    initrdKernelModules = config.boot.initrd.kernelModules;
    inherit standinInitrdModules;
    externalKernel = config.standin.externalKernel;
    services = {
      openssh = config.services.openssh.enable;
      nfsServer = config.services.nfs.server.enable;
      rpcbind = config.services.rpcbind.enable;
      libvirtd = config.virtualisation.libvirtd.enable;
      mysql = config.services.mysql.enable;
      postgresql = config.services.postgresql.enable;
    };
    systemdServices = lib.mapAttrs (_: s: { inherit (s) enable description serviceConfig; })
      config.systemd.services;
  };

  etcEntries = concatMapStrings (e:
    "${e.target}\t${if e.source != null then "${e.source}" else pkgs.writeText "etc-${baseNameOf e.target}" e.text}\n")
    (filter (e: e.enable && (e.source != null || e.text != null)) (builtins.attrValues config.environment.etc));

  # boot scripts ----------------------------------------------------------
  stage1 = builtins.replaceStrings [ "@bootMounts@" ] [ bootMounts ]
    (builtins.readFile ./system/stage-1-init.sh);

  stage2 = "#!${busybox}/bin/busybox sh\n"
    + builtins.replaceStrings
      [ "@busybox@" "@toplevel@" "@hostName@" "@userName@" "@modules@" "@banner@" "@lateMounts@" ]
      [ "${busybox}" out (sh hostName) (sh userName)
        (sh (concatStringsSep " " config.standin.importedModules))
        (sh config.standin.bannerPrefix) lateMounts ]
      (builtins.readFile ./system/stage-2-init.sh);

  bootJson = builtins.toJSON {
    "org.nixos.bootspec.v1" = {
      system = pkgs.system;
      kernel = "${out}/kernel";
      kernelParams = config.boot.kernelParams;
      label = "NixOS ${label} (kdevweb stand-in)";
      initrd = "${out}/initrd";
      toplevel = out;
      init = "${out}/init";
    };
    "org.nixos.specialisation.v1" = { };
  };

  kernelNote = if config.standin.externalKernel then ''
    kdevweb nixos-flake stand-in: this imageless guest boots an EXTERNAL kernel.
    The launcher supplies it (e.g. /boot/vmlinuz-*); this file is a placeholder.
  '' else ''
    kdevweb nixos-flake stand-in: no NixOS kernel is built offline.
    This file is a placeholder; the stand-in disk image is not bootable.
  '';

  initrd = builtins.derivation {
    name = "initrd-standin-${hostName}";
    system = pkgs.system;
    builder = "/bin/sh";
    args = [ "-e" ./system/make-initrd.sh ];
    PATH = hostPath;
    inherit busybox stage1;
    kernelModules = concatStringsSep " " initrdModules;
    passAsFile = [ "stage1" ];
  };

  toplevelDrv = builtins.derivation {
    name = "nixos-system-${hostName}-${label}";
    system = pkgs.system;
    builder = "/bin/sh";
    args = [ "-e" ./system/make-toplevel.sh ];
    PATH = hostPath;
    inherit busybox initrd hostName stage2 bootJson passwd group kernelNote etcEntries authorizedKeys;
    record = builtins.toJSON record;
    packages = concatStringsSep " " (map toString config.environment.systemPackages);
    failBuild = if config.standin.failBuild then "1" else "";
    buildSeconds = toString config.standin.buildSeconds;
    logLines = toString config.standin.logLines;
    passAsFile = [ "stage2" "bootJson" "record" "passwd" "group" "kernelNote" "etcEntries" "authorizedKeys" ];
  };

  failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);

  # In NixOS nearly every option's value ends up in the system (units, /etc,
  # activation), so a wrong definition anywhere fails the toplevel. The
  # stand-in builds far less, so it forces every option's value instead
  # (stopping at derivations and functions); system.build is what is built.
  forceAll = v:
    if builtins.isList v then builtins.all forceAll v
    else if builtins.isAttrs v && !(v ? outPath) then builtins.all forceAll (builtins.attrValues v)
    else true;
  allOptionsEvaluate = forceAll (removeAttrs config [ "system" ])
    && forceAll (removeAttrs config.system [ "build" ]);

  toplevel =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${concatMapStrings (m: "- ${m}\n") failedAssertions}"
    else builtins.seq allOptionsEvaluate (lib.foldr (w: x: lib.warn w x) toplevelDrv config.warnings);
in
{
  key = "nixpkgs-standin/nixos/modules/system-build.nix";
  config.system.build = {
    inherit toplevel initrd busybox;
    standinRecord = record;
  };
}
