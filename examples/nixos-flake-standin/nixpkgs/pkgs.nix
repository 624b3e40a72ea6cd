# The stand-in package set: a few dozen names a kernel lab uses.
#
# Every package is a REAL (tiny) derivation so that closures, diffs and
# `nix path-info -S` behave: building one writes a description file into
# $out/share/kdevweb-standin/<pname>. They do not contain the real programs.
# `busybox` is the exception: it is the host's /bin/busybox (busybox-static)
# copied into the store, and it is what the guest actually runs.
#
# Builders use "/bin/sh" and host tools from /bin and /usr/bin: this only
# works because the host's nix.conf has `sandbox = false` (Debian nix 2.8).
#
# Like nixpkgs: `overrideAttrs` takes an attrset, `prev: { ... }` or
# `final: prev: { ... }`; overlays are `final: prev: { ... }` applied in order;
# an unknown attribute fails evaluation.
{ lib, system ? "x86_64-linux", overlays ? [ ] }:
let
  hostPath = "/usr/bin:/bin";

  toExtension = f0:
    if builtins.isFunction f0 then
      (final: prev: let r = f0 prev; in if builtins.isFunction r then f0 final prev else r)
    else (_: _: f0);

  mkPackage = attrs0:
    let
      attrs = {
        version = "0"; src = null; meta = { }; passthru = { };
        script = ''
          set -e
          echo "kdevweb-standin: building placeholder package $name"
          mkdir -p "$out/share/kdevweb-standin"
          {
            echo "name=$name"
            echo "pname=$pname"
            echo "version=$version"
            echo "src=$src"
            echo "note=kdevweb nixos-flake stand-in package: a placeholder, not the real program"
          } > "$out/share/kdevweb-standin/$pname"
        '';
      } // attrs0;
      name = attrs.name or "${attrs.pname}-${attrs.version}";
      drv = builtins.derivation {
        inherit name system;
        inherit (attrs) pname version;
        builder = "/bin/sh";
        PATH = hostPath;
        # A package override (e.g. `src = inputs.fio-src`) is recorded in the
        # output, so the source path becomes part of the closure.
        src = if attrs.src == null then "" else attrs.src;
        args = [ "-c" attrs.script ];
      };
    in
    drv // attrs.passthru // {
      inherit (attrs) pname version src meta;
      passthru = attrs.passthru;
      overrideAttrs = f0:
        mkPackage (lib.fix (final: attrs // toExtension f0 final attrs));
    };

  p = pname: version: mkPackage { inherit pname version; };

  # The host's static busybox, copied into the store (see the README).
  busybox = mkPackage {
    pname = "busybox";
    version = "1.35.0";
    script = ''
      set -e
      echo "kdevweb-standin: copying host /bin/busybox (busybox-static) into the store"
      mkdir -p "$out/bin"
      cp /bin/busybox "$out/bin/busybox"
      chmod 0555 "$out/bin/busybox"
      "$out/bin/busybox" true
    '';
  };

  base = final: {
    inherit lib system busybox;
    # stdenv.mkDerivation makes a placeholder package (phases are ignored).
    stdenv = {
      hostPlatform = { inherit system; isLinux = true; isx86_64 = true; };
      mkDerivation = mkPackage;
    };
    callPackage = fn: args:
      let f = if builtins.isFunction fn then fn else import fn; in
      f (builtins.intersectAttrs (builtins.functionArgs f) final // args);
    buildPlatform = final.stdenv.hostPlatform;
    hostPlatform = final.stdenv.hostPlatform;

    # small "trivial builders"
    runCommand = name: env: script: builtins.derivation ({
      inherit name system;
      builder = "/bin/sh";
      PATH = hostPath;
      args = [ "-c" script ];
    } // env);
    writeText = name: text: final.runCommand name { inherit text; passAsFile = [ "text" ]; }
      ''cp "$textPath" "$out"'';
    writeShellScript = name: text: final.runCommand name { inherit text; passAsFile = [ "text" ]; } ''
      { echo "#!${busybox}/bin/busybox sh"; cat "$textPath"; } > "$out"; chmod +x "$out"
    '';
    writeShellScriptBin = name: text: final.runCommand name { inherit text; passAsFile = [ "text" ]; } ''
      mkdir -p "$out/bin"
      { echo "#!${busybox}/bin/busybox sh"; cat "$textPath"; } > "$out/bin/${name}"
      chmod +x "$out/bin/${name}"
    '';

    # tools
    bash = p "bash" "5.2.37";
    bc = p "bc" "1.08.1";
    bison = p "bison" "3.8.2";
    bcc = p "bcc" "0.33.0";
    bpftrace = p "bpftrace" "0.23.2";
    btrfs-progs = p "btrfs-progs" "6.14";
    ccache = p "ccache" "4.11.3";
    coreutils = p "coreutils" "9.7";
    cpupower = p "cpupower" "6.12";
    curl = p "curl" "8.13.0";
    e2fsprogs = p "e2fsprogs" "1.47.2";
    elfutils = p "elfutils" "0.193";
    ethtool = p "ethtool" "6.14";
    fio = p "fio" "3.39";
    flex = p "flex" "2.6.4";
    gcc = p "gcc" "14.2.1";
    gdb = p "gdb" "16.3";
    git = p "git" "2.49.0";
    gnumake = p "gnumake" "4.4.1";
    htop = p "htop" "3.4.1";
    iproute2 = p "iproute2" "6.14.0";
    jq = p "jq" "1.7.1";
    kmod = p "kmod" "34.2";
    lvm2 = p "lvm2" "2.03.31";
    mdadm = p "mdadm" "4.3";
    ncurses = p "ncurses" "6.5";
    nfs-utils = p "nfs-utils" "2.8.3";
    numactl = p "numactl" "2.0.19";
    openssl = p "openssl" "3.4.1";
    pahole = p "pahole" "1.30";
    perf = p "perf" "6.12";
    python3 = p "python3" "3.13.3";
    rsync = p "rsync" "3.4.1";
    strace = p "strace" "6.14";
    sysstat = p "sysstat" "12.7.7";
    tmux = p "tmux" "3.5a";
    trace-cmd = p "trace-cmd" "3.3.1";
    util-linux = p "util-linux" "2.41";
    vim = p "vim" "9.1.1336";
    xfsprogs = p "xfsprogs" "6.14.0";
    # controller tools
    ansible = p "ansible" "2.18.5";
    libvirt = p "libvirt" "11.3.0";
    qemu = p "qemu" "10.0.0";
    qemu-utils = p "qemu-utils" "10.0.0";
    virtiofsd = p "virtiofsd" "1.13.1";
    # monitoring, toolchain and test-suite dependencies
    cpio = p "cpio" "2.15";
    fastfetch = p "fastfetch" "2.43.0";
    gawk = p "gawk" "5.3.2";
    hostname = p "hostname" "3.25";
    mariadb = p "mariadb" "11.4.5";
    perl = p "perl" "5.40.0";
    pkg-config = p "pkg-config" "0.29.2";
    postgresql = p "postgresql" "17.4";
    zstd = p "zstd" "1.5.7";

    python3Packages = {
      pytest = mkPackage { pname = "pytest"; version = "8.3.5"; name = "python3.13-pytest-8.3.5"; };
      pyyaml = mkPackage { pname = "pyyaml"; version = "6.0.2"; name = "python3.13-pyyaml-6.0.2"; };
      jinja2 = mkPackage { pname = "jinja2"; version = "3.1.6"; name = "python3.13-jinja2-3.1.6"; };
    };
  };

  pkgs = lib.fix (lib.foldl' (f: overlay: lib.extends overlay f) base overlays);
in
pkgs
