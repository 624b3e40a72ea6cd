# profiles.monitoring: declares nixos-flake.monitoring.* (only when imported,
# as upstream) and, when monitoring.enable is true, installs sysstat and
# defines the per-run template units monitor-<name>@ the orchestrator starts.
# Without monitoring.enable the profile is a silent no-op, as upstream.
# Types and defaults follow upstream, including the two defaults that
# follow monitoring.enable (sysstat.enable, cpuGovernor.enable).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.nixos-flake.monitoring;
  opt = type: default: description: mkOption { inherit type default description; };
  out = cfg.outputDir;

  libbpfUnit = name: args: extra: {
    description = "${name} (libbpf-tools) recorder for run %i";
    serviceConfig = {
      Type = "simple";
      ExecStartPre = "mkdir -p ${out}/${name}";
      ExecStart = lib.concatStringsSep " " ([ "${pkgs.libbpf-tools}/bin/${name}-libbpf" ] ++ args);
      ReadWritePaths = out;
    } // extra;
  };
in
{
  options.nixos-flake.monitoring = {
    enable = lib.mkEnableOption "system monitoring bracketed by test runs";
    outputDir = opt types.str "/var/lib/monitoring/runs/%i"
      "Where the monitors of run %i write (systemd expands %i to the run id).";
    sysstat = {
      enable = opt types.bool cfg.enable "The monitor-sysstat@ unit (default: monitoring.enable).";
      interval = opt types.ints.positive 5 "sadc sampling interval, seconds.";
      maxSamples = opt types.ints.positive 999999 "Samples sadc takes before it stops by itself.";
    };
    cpuGovernor.enable = opt types.bool cfg.enable
      "The monitor-cpu-governor@ unit (default: monitoring.enable).";
    blkalgn = {
      enable = opt types.bool false "The monitor-blkalgn@ unit.";
      disk = opt types.str "" "Disk to trace; empty: every disk.";
      ops = opt types.str "" "ONE block operation name to trace (e.g. \"Write\"); empty: all of them.";
    };
    biolatency = {
      enable = opt types.bool false "The monitor-biolatency@ unit.";
      milliseconds = opt types.bool true "Histograms in milliseconds.";
      queued = opt types.bool false "Count OS queued time.";
      perDisk = opt types.bool false "A histogram per disk (-D).";
      perFlag = opt types.bool false "A histogram per I/O flag set (-F).";
      disk = opt types.str "" "Disk to trace; empty: every disk.";
      interval = opt types.ints.positive 30 "Seconds between histograms.";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ pkgs.sysstat pkgs.fastfetch ];

    systemd.services."monitor-sysstat@" = lib.mkIf cfg.sysstat.enable {
      description = "sysstat recorder for run %i";
      serviceConfig = {
        Type = "simple";
        ExecStartPre = "mkdir -p ${out}/sysstat";
        ExecStart = "${pkgs.sysstat}/lib/sa/sadc -S ALL ${toString cfg.sysstat.interval} ${toString cfg.sysstat.maxSamples} ${out}/sysstat/sa-current";
        ReadWritePaths = out;
      };
    };

    systemd.services."monitor-cpu-governor@" = lib.mkIf cfg.cpuGovernor.enable {
      description = "CPU governor snapshot for run %i";
      serviceConfig = { Type = "oneshot"; RemainAfterExit = true; ReadWritePaths = out; };
    };

    systemd.services."monitor-blkalgn@" = lib.mkIf cfg.blkalgn.enable (libbpfUnit "blkalgn"
      (lib.optionals (cfg.blkalgn.disk != "") [ "--disk" cfg.blkalgn.disk ]
        ++ lib.optionals (cfg.blkalgn.ops != "") [ "--ops" cfg.blkalgn.ops ]
        ++ [ "--json" "${out}/blkalgn/blkalgn.json" ]) { });

    systemd.services."monitor-biolatency@" = lib.mkIf cfg.biolatency.enable (libbpfUnit "biolatency"
      (lib.optional cfg.biolatency.milliseconds "--milliseconds"
        ++ lib.optional cfg.biolatency.queued "--queued"
        ++ lib.optional cfg.biolatency.perDisk "-D"
        ++ lib.optional cfg.biolatency.perFlag "-F"
        ++ lib.optionals (cfg.biolatency.disk != "") [ "-d" cfg.biolatency.disk ]
        ++ [ "--timestamp" (toString cfg.biolatency.interval) ])
      { StandardOutput = "append:${out}/biolatency/biolatency.txt"; });
  };
}
