# profiles.devel: storage, tracing and debugging tools (no options of its
# own). Upstream also turns on bash completion and lets VFIO assign devices
# without interrupt remapping; its package list is much longer.
{ pkgs, ... }:
{
  programs.bash.completion.enable = true;
  boot.extraModprobeConfig = "options vfio_iommu_type1 allow_unsafe_interrupts=1";
  environment.systemPackages = with pkgs; [
    gdb git vim tmux htop strace trace-cmd perf bpftrace jq
    fio xfsprogs sysstat bcc cpupower damo libbpf-tools xnvme nfs-utils
  ];
}
