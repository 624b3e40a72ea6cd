# overlays.default: the test suites and tools nixos-flake packages itself
# (placeholder derivations in the stand-in, like every stand-in package).
# Upstream's overlay also adds cpupower (its source: input `kernel-src`),
# damo, libbpf-tools, nfstest, pynfs and xnvme.
final: prev:
let
  mk = pname: version: final.stdenv.mkDerivation { inherit pname version; };
in
{
  blktests = mk "blktests" "0-unstable-2025-05-01";
  xfstests = mk "xfstests" "2025.04.27";
  gitr = mk "gitr" "0-unstable-2025-03-10";
  ltp = mk "ltp" "20250130";
  mmtests = mk "mmtests" "0-unstable-2025-04-02";
  pynfs = mk "pynfs" "0.7-unstable-2025-01-15";
  kselftests = mk "kselftests" "6.12";
  sysbench = mk "sysbench" "1.0.20";
  cpupower = mk "cpupower" "6.12";
  damo = mk "damo" "2.7.6";
  libbpf-tools = mk "libbpf-tools" "0.33.0";
  nfstest = mk "nfstest" "3.2";
  xnvme = mk "xnvme" "0.7.5";
}
