# system.build.{toplevel,initrd} of the stand-in: real derivations, built by
# the host's nix with builder "/bin/sh" and host tools (busybox-static, cpio,
# gzip, xz, grep, sed from /bin and /usr/bin). That is only possible because
# the host runs nix with `sandbox = false` (Debian's nix 2.8 here); with a
# sandbox these builders would not find /bin/sh, /lib/modules or cpio.
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

  # users and groups ----------------------------------------------------
  users = mapAttrsToList (name: u: u // { inherit name; }) config.users.users;
  normalUsers = lib.imap0 (i: u: u // { uid = u.uid or (1000 + i); })
    (filter (u: u.isNormalUser or false) users);
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
  fileSystems = lib.sort (a: c: a.mountPoint < c.mountPoint) (mapAttrsToList (mp: fs: {
    mountPoint = mp;
    device = fs.device or "none";
    fsType = fs.fsType or "auto";
    options = concatStringsSep "," (fs.options or [ ]);
    neededForBoot = fs.neededForBoot or false;
  }) config.fileSystems);
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
    externalKernel = config.standin.externalKernel;
    services = {
      openssh = config.services.openssh.enable;
      nfsServer = config.services.nfs.server.enable;
      rpcbind = config.services.rpcbind.enable;
      sysstat = config.services.sysstat.enable;
      libvirtd = config.virtualisation.libvirtd.enable;
    };
  };

  etcEntries = concatMapStrings (name: let e = config.environment.etc.${name}; in
    "${name}\t${if e ? source then "${e.source}" else pkgs.writeText "etc-${baseNameOf name}" e.text}\n")
    (builtins.attrNames config.environment.etc);

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
    kernelModules = concatStringsSep " " config.boot.initrd.kernelModules;
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
  toplevel =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${concatMapStrings (m: "- ${m}\n") failedAssertions}"
    else lib.foldr (w: x: lib.warn w x) toplevelDrv config.warnings;
in
{
  key = "nixpkgs-standin/nixos/modules/system-build.nix";
  config.system.build = {
    inherit toplevel initrd busybox;
    standinRecord = record;
  };
}
