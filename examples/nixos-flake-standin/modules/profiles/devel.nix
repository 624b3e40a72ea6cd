# profiles.devel: debugging and editing tools (no options).
{ pkgs, ... }:
{
  environment.systemPackages = with pkgs; [ gdb git vim tmux htop strace trace-cmd perf bpftrace jq ];
}
