# testSuites.<name>: install the suite (placeholders from overlays.default
# and the stand-in package set; upstream's package lists are longer) plus
# the option-level side effects upstream has, because they decide what else
# a configuration may set:
#  * fstests: fixed system users and groups (fsgqa, fsgqa2, 123456-fsgqa,
#    daemon, bin, sys), NFS server and rpcbind (mkDefault), services.lvm and
#    documentation forced on, the xfs module loaded at boot;
#  * sysbench: MariaDB and PostgreSQL (mkDefault).
name: { lib, pkgs, ... }:
let
  suites = with pkgs; {
    blktests = [ blktests fio lvm2 mdadm sysstat ];
    fstests = [ xfstests fio xfsprogs e2fsprogs btrfs-progs lvm2 nfs-utils util-linux ];
    gitr = [ gitr git ];
    ltp = [ ltp ];
    mmtests = [ mmtests numactl cpupower sysstat ];
    pynfs = [ pynfs python3 nfs-utils ];
    selftests = [ kselftests numactl iproute2 ethtool ];
    sysbench = [ sysbench mariadb postgresql ];
  };
  systemUser = group: { isSystemUser = true; inherit group; useDefaultShell = true; };
in
lib.mkMerge [
  { environment.systemPackages = suites.${name}; }

  (lib.mkIf (name == "fstests") {
    users.groups = {
      fsgqa.gid = 500;
      sys.gid = 501;
      daemon.gid = 502;
      bin.gid = 503;
      fsgqa2.gid = 504;
      "123456-fsgqa".gid = 505;
    };
    users.users = {
      fsgqa = systemUser "fsgqa";
      fsgqa2 = systemUser "fsgqa2";
      "123456-fsgqa" = systemUser "123456-fsgqa" // { uid = 123456; };
      daemon = systemUser "daemon";
      bin = systemUser "bin";
    };
    services.nfs.server.enable = lib.mkDefault true;
    services.rpcbind.enable = lib.mkDefault true;
    services.lvm.enable = lib.mkForce true;
    documentation.enable = lib.mkForce true;
    documentation.man.enable = lib.mkForce true;
    boot.kernelModules = [ "xfs" ];
  })

  (lib.mkIf (name == "sysbench") {
    services.mysql = { enable = lib.mkDefault true; package = lib.mkDefault pkgs.mariadb; };
    services.postgresql.enable = lib.mkDefault true;
  })
]
