# testSuites.<name>: install the suite (from overlays.default) and what it
# runs with. fstests also enables an NFS server and rpcbind (as upstream).
name: { lib, pkgs, ... }:
let
  suites = with pkgs; {
    blktests = [ blktests fio ];
    fstests = [ xfstests fio xfsprogs e2fsprogs btrfs-progs ];
    gitr = [ gitr git ];
    ltp = [ ltp ];
    mmtests = [ mmtests numactl ];
    pynfs = [ pynfs python3 nfs-utils ];
    selftests = [ kselftests ];
    sysbench = [ sysbench ];
  };
in
{
  environment.systemPackages = suites.${name};
} // lib.optionalAttrs (name == "fstests") {
  services.nfs.server.enable = true;
  services.rpcbind.enable = true;
}
