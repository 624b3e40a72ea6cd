# Stand-in for the parts of nixpkgs/nixos every configuration gets: the
# ordinary NixOS options the stand-in modules, kdevweb's rendered flakes and
# typical extra modules touch, declared WITH TYPES and NixOS' defaults, and
# `system.build.toplevel` (see ./system-build.nix).
#
# Only a SUBSET of NixOS' options is declared. The evaluator rejects every
# undeclared option ("The option `x' does not exist."), so a real NixOS
# option missing here is rejected too: the stand-in is stricter than NixOS
# there, never more lenient. Add the declaration (with its real type and
# default) when a real configuration needs it.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  bool = default: opt types.bool default;
  str = default: opt types.str default;
  strs = opt (types.listOf types.str) [ ];
  anyAttrs = opt (types.attrsOf types.anything) { };

  userOptions = { name, config, ... }: {
    # As NixOS: a normal user's primary group defaults to "users".
    config.group = lib.mkIf config.isNormalUser (lib.mkDefault "users");
    options = {
      name = str name;
      isNormalUser = bool false;
      isSystemUser = bool false;
      uid = opt (types.nullOr types.int) null;
      group = str "";
      extraGroups = strs;
      description = str "";
      home = str (if name == "root" then "/root" else "/home/${name}");
      createHome = bool false;
      useDefaultShell = bool false;
      shell = opt (types.nullOr (types.either types.package types.path)) null;
      initialPassword = opt (types.nullOr types.str) null;
      hashedPassword = opt (types.nullOr types.str) null;
      openssh.authorizedKeys.keys = strs;
      openssh.authorizedKeys.keyFiles = opt (types.listOf types.path) [ ];
    };
  };

  fileSystemOptions = { name, ... }: {
    options = {
      enable = bool true;
      mountPoint = str name;
      device = opt (types.nullOr types.str) null;
      label = opt (types.nullOr types.str) null;
      fsType = str "auto";
      options = opt (types.listOf types.nonEmptyStr) [ "defaults" ];
      depends = opt (types.listOf types.str) [ ];
      neededForBoot = bool false;
      autoFormat = bool false;
      formatOptions = opt (types.nullOr types.str) null;
      autoResize = bool false;
      noCheck = bool false;
    };
  };

  etcOptions = { name, ... }: {
    options = {
      enable = bool true;
      target = str name;
      text = opt (types.nullOr types.lines) null;
      source = opt (types.nullOr types.path) null;
      mode = str "symlink";
    };
  };

  serviceOptions = { name, ... }: {
    options = {
      enable = bool true;
      description = str "";
      documentation = strs;
      wantedBy = strs;
      requiredBy = strs;
      wants = strs;
      requires = strs;
      before = strs;
      after = strs;
      path = opt (types.listOf (types.either types.package types.str)) [ ];
      environment = opt (types.attrsOf (types.nullOr types.str)) { };
      script = opt types.lines "";
      unitConfig = anyAttrs;
      serviceConfig = anyAttrs;
    };
  };

  # NixOS' users-groups assertions (the ones a configuration can trip over,
  # e.g. a guest user named like a system user fstests creates).
  users = builtins.attrValues config.users.users;
  ids = xs: builtins.filter (x: x != null) xs;
  allUnique = xs: builtins.length (lib.unique xs) == builtins.length xs;
  userAssertions = builtins.concatMap (u: [
    {
      assertion = (u.isSystemUser || (u.uid != null && u.uid < 1000)) != u.isNormalUser;
      message = "Exactly one of users.users.${u.name}.isSystemUser and users.users.${u.name}.isNormalUser must be set.";
    }
    {
      assertion = u.group != "";
      message = "users.users.${u.name}.group is unset. This used to default to nogroup, but this is unsafe.";
    }
  ]) users ++ [{
    assertion = allUnique (ids (map (u: u.uid) users))
      && allUnique (ids (map (g: g.gid) (builtins.attrValues config.users.groups)));
    message = "UIDs and GIDs must be unique!";
  }];

  overlay = lib.mkOptionType {
    name = "nixpkgs-overlay";
    description = "nixpkgs overlay";
    check = builtins.isFunction;
    merge = lib.mergeOneOption;
  };
in
{
  key = "nixpkgs-standin/nixos/modules/base.nix";
  imports = [ ./system-build.nix ];

  config = {
    users.users.root = { uid = 0; group = "root"; home = "/root"; };
    users.groups = { root.gid = 0; wheel.gid = 1; users.gid = 100; };
    assertions = userAssertions;
  };

  options = {
    networking.hostName = str "nixos";
    networking.domain = opt (types.nullOr types.str) null;
    networking.useDHCP = bool true;
    networking.useNetworkd = bool false;
    networking.firewall.enable = bool true;
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];

    system.nixos.release = mkOption { type = types.str; default = lib.trivial.release; readOnly = true; };
    system.nixos.label = str "${lib.trivial.release}-standin";
    system.stateVersion = str config.system.nixos.release;
    system.build = mkOption {
      type = types.lazyAttrsOf (types.uniq types.unspecified);
      default = { };
      description = "Derivations (and other values) the configuration builds.";
    };

    nixpkgs.overlays = opt (types.listOf overlay) [ ];
    nixpkgs.config = opt types.attrs { };
    nixpkgs.hostPlatform = opt (types.either types.str types.attrs) "x86_64-linux";

    environment.systemPackages = opt (types.listOf types.package) [ ];
    environment.etc = opt (types.attrsOf (types.submodule etcOptions)) { };
    environment.variables = opt (types.attrsOf types.str) { };

    users.users = opt (types.attrsOf (types.submodule userOptions)) { };
    users.groups = opt (types.attrsOf (types.submodule ({ name, ... }: {
      options = {
        name = str name;
        gid = opt (types.nullOr types.int) null;
        members = strs;
      };
    }))) { };
    users.mutableUsers = bool true;
    security.sudo.enable = bool true;
    security.sudo.wheelNeedsPassword = bool true;

    fileSystems = opt (types.attrsOf (types.submodule fileSystemOptions)) { };
    swapDevices = opt (types.listOf types.attrs) [ ];

    boot.kernel.enable = bool true;
    boot.kernelPackages = opt types.raw { };
    boot.kernelParams = strs;
    boot.kernelModules = strs;
    boot.blacklistedKernelModules = strs;
    boot.extraModprobeConfig = opt types.lines "";
    boot.initrd.kernelModules = strs;
    boot.initrd.availableKernelModules = strs;
    boot.initrd.systemd.enable = bool false;
    boot.initrd.systemd.emergencyAccess = opt (types.either types.bool types.str) false;
    boot.initrd.supportedFilesystems = opt
      (types.coercedTo (types.listOf types.str) (l: lib.genAttrs l (_: true)) (types.attrsOf types.bool)) { };
    boot.supportedFilesystems = opt
      (types.coercedTo (types.listOf types.str) (l: lib.genAttrs l (_: true)) (types.attrsOf types.bool)) { };
    boot.loader.timeout = opt (types.nullOr types.int) 5;
    boot.loader.grub.enable = bool true;
    boot.loader.grub.device = str "";
    boot.loader.grub.devices = strs;
    boot.loader.grub.efiSupport = bool false;
    boot.loader.systemd-boot.enable = bool false;
    boot.loader.efi.canTouchEfiVariables = bool false;
    boot.loader.efi.efiSysMountPoint = str "/boot";

    services.openssh.enable = bool false;
    services.openssh.ports = opt (types.listOf types.port) [ 22 ];
    # NixOS' settings are freeform (any sshd_config key); only these are declared here.
    services.openssh.settings = opt (types.submodule {
      options = {
        PermitRootLogin = opt (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ])
          "prohibit-password";
        PasswordAuthentication = bool true;
        KbdInteractiveAuthentication = bool true;
        PubkeyAuthentication = opt (types.nullOr types.bool) null;
        X11Forwarding = bool false;
        UseDns = bool false;
        StrictModes = bool true;
        LogLevel = opt (types.nullOr (types.enum [ "QUIET" "FATAL" "ERROR" "INFO" "VERBOSE" "DEBUG" "DEBUG1" "DEBUG2" "DEBUG3" ])) "INFO";
      };
    }) { };
    services.nfs.server.enable = bool false;
    services.rpcbind.enable = bool false;
    services.lvm.enable = bool true;
    services.mysql.enable = bool false;
    services.mysql.package = opt (types.nullOr types.package) null;
    services.postgresql.enable = bool false;
    services.getty.autologinUser = opt (types.nullOr types.str) null;

    systemd.services = opt (types.attrsOf (types.submodule serviceOptions)) { };
    systemd.packages = opt (types.listOf types.package) [ ];
    systemd.tmpfiles.rules = strs;
    systemd.oomd.enable = bool true;
    systemd.network.networks = opt (types.attrsOf (types.submodule {
      options = {
        matchConfig = anyAttrs;
        networkConfig = anyAttrs;
        linkConfig = anyAttrs;
      };
    })) { };

    virtualisation.libvirtd.enable = bool false;
    virtualisation.libvirtd.qemu.runAsRoot = bool true;
    virtualisation.libvirtd.qemu.vhostUserPackages = opt (types.listOf types.package) [ ];

    programs.bash.completion.enable = bool true;
    documentation.enable = bool true;
    documentation.man.enable = bool true;

    nix.enable = bool true;
    nix.settings = anyAttrs;
    nix.gc.automatic = bool false;
    nix.gc.dates = str "03:15";
    nix.gc.options = str "";

    time.timeZone = opt (types.nullOr types.str) null;
    i18n.defaultLocale = str "en_US.UTF-8";

    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      description = "{ assertion; message; } pairs; a false one fails system.build.toplevel.";
    };
    warnings = opt (types.listOf types.str) [ ];

    # Stand-in only (not NixOS options):
    standin = {
      importedModules = mkOption {
        default = [ ];
        type = types.listOf types.str;
        description = "Names of the nixos-flake modules imported (each stand-in module adds its own).";
      };
      failBuild = mkOption {
        default = false;
        type = types.bool;
        description = "Make system.build.toplevel fail on purpose (after printing a few log lines).";
      };
      buildSeconds = mkOption {
        default = 0;
        type = types.ints.unsigned;
        description = "Make the build take this many seconds longer (for cancel and timeout tests).";
      };
      logLines = mkOption {
        default = 0;
        type = types.ints.unsigned;
        description = "Make the build print this many extra log lines (for log streaming tests and benchmarks).";
      };
      externalKernel = mkOption {
        default = false;
        type = types.bool;
        description = "The guest boots a kernel supplied by the launcher (imageless).";
      };
      loadVirtioModules = mkOption {
        default = true;
        type = types.bool;
        description = ''
          STAND-IN ONLY, a difference from upstream: the stand-in's initrd
          carries the host's virtio/virtiofs/virtio_console modules and loads
          them in stage 1, so Debian's modular kernel boots it offline. The
          real imageless initrd has no modules (a kernel with virtiofs built
          in is needed); set this to false to get exactly that.
        '';
      };
      readOnlyStore = mkOption {
        default = true;
        type = types.bool;
        description = ''
          STAND-IN ONLY: stage 1 mounts the `store` virtiofs tag read-only
          (Debian's C virtiofsd cannot export read-only). Upstream does not.
        '';
      };
      bannerPrefix = mkOption {
        default = "kdevweb-standin";
        type = types.str;
        description = "Prefix of the 'ready' line stage 2 prints on every console.";
      };
    };
  };
}
