# The flakes the nix-2.8-daemon-*.log and nix-2.8-remote-builder.log files
# were recorded from (Nix 2.8.0, Debian, a local nix-daemon with sandbox off;
# each build script carried a timestamp comment so the daemon really built).
#
# nix-2.8-daemon-untrusted.log: this flake in /tmp/kt-nixlog/rec, as the
# unprivileged user nobody (not a trusted user), through the daemon:
#   runuser -u nobody -- env HOME=... NIX_REMOTE=daemon nix build -L \
#     --log-format internal-json --json --no-link \
#     --option substituters http://127.0.0.1:1 path:/tmp/kt-nixlog/rec#default
# The daemon's "ignoring untrusted substituter" warnings reach the client at
# level 0; the failure message carries the log tail (the daemon's logger is
# not verbose) and the build lines are forwarded as well.
#
# nix-2.8-remote-builder.log: the same flake, without the daemon, with an
# unreachable remote builder and an unknown setting in NIX_CONFIG:
#   NIX_CONFIG="frobnicate-level = 3" nix build -L --log-format internal-json \
#     --json --no-link --max-jobs 0 --builders 'ssh://builder@192.0.2.7 x86_64-linux' \
#     --option connect-timeout 3 --option substituters '' path:/tmp/kt-nixlog/rec#default
# "warning: unknown setting" comes first as plain text, before nix switches
# to JSON; "cannot build on ..." is a level-0 message without "error:".
{
  outputs = { self }: let
    mk = name: script: deps: builtins.derivation {
      inherit name deps;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
    };
    phase = p: "echo '@nix {\"action\":\"setPhase\",\"phase\":\"${p}\"}' >&2";
    lib = mk "d-lib-1.0" ''
      ${phase "buildPhase"}; echo compiling lib # <timestamp>
      ${phase "installPhase"}; echo lib > $out
    '' "";
    bad = mk "d-bad-3.0" ''
      ${phase "buildPhase"}; echo compiling bad
      echo 'bad.c:7:2: error: unknown type name foo' >&2
      echo 'make: *** [Makefile:4: bad.o] Error 1' >&2
      exit 1
    '' "${lib}";
  in {
    packages.x86_64-linux.default = bad;
  };
}
# nix-2.8-daemon-verbose.log: a second flake (in /tmp/kt-nixlog/rec2), as
# root (trusted) through the daemon, verbose and with store optimisation, so
# the daemon's talkative "linking '…' to '/nix/store/.links/…'" lines reach
# the client at level 0; with no network the daemon's cache.nixos.org
# retries come as "warning: error: … retrying in N ms" at level 0 too:
#   nix build --no-link --option auto-optimise-store true path:$PWD#first
#   NIX_REMOTE=daemon nix build -v -L --log-format internal-json --json \
#     --no-link --option auto-optimise-store true path:$PWD#default
# with
#   docs  = mk "d-docs-2.4" (echo generating docs; mkdir $out/share/doc with
#           COPYING and README, the same files as "first" holds)
#   first = mk "d-first" (mkdir $out with the same COPYING and README)
#   default = a derivation "d-check" on docs that prints two lines and exits 1.

# nix-2.8-multi.log: a third flake (in /tmp/kt-nixlog/rec3), three
# installables built one at a time, no daemon, sandbox on:
#   nix build -L --log-format internal-json --json --no-link --max-jobs 1 \
#     --option substituters '' path:$PWD#a path:$PWD#b path:$PWD#c
# with a, b, c = mk "m-{a,b,c}-1.0" (setPhase buildPhase; echo building X;
# c also echoes "running tests"; echo X > $out). The three top-level build
# activities stop only at the end, last first, though Builds counts one
# running at a time.
