# kdevweb's OFFLINE STAND-IN for linux-kdevops/nixos-flake.
#
# Same module names as upstream (nixosModules.backends.*, user, default,
# profiles.*, mounts.*, testSuites.*) and overlays.default, evaluated by the
# stand-in nixpkgs in ./nixpkgs (no network inputs). Builds need the host's
# nix to run with `sandbox = false`. See README.md.
{
  description = "kdevweb offline stand-in for linux-kdevops/nixos-flake";

  inputs.nixpkgs.url = "path:./nixpkgs";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      testSuites = [ "blktests" "fstests" "gitr" "ltp" "mmtests" "pynfs" "selftests" "sysbench" ];

      # Every module records its own name in config.standin.importedModules
      # and is deduplicated by its key (importing `default` and `user`
      # together imports `user` once).
      named = name: module: {
        key = "nixos-flake-standin#${name}";
        _file = "nixos-flake-standin#${name}";
        imports = [ ./modules/options.nix module ];
        config.standin.importedModules = [ name ];
      };
    in
    {
      nixosModules = {
        backends = {
          imageless = named "backends.imageless" ./modules/backends/imageless.nix;
          libvirt = named "backends.libvirt" ./modules/backends/libvirt.nix;
        };
        user = named "user" ./modules/user.nix;
        default = named "default" {
          imports = [ self.nixosModules.backends.imageless self.nixosModules.user ];
        };
        profiles = lib.genAttrs [ "devel" "build-tools" "monitoring" "controller" ]
          (p: named "profiles.${p}" (./modules/profiles + "/${p}.nix"));
        mounts = {
          shares = named "mounts.shares" ./modules/mounts/shares.nix;
          storage = named "mounts.storage" ./modules/mounts/storage.nix;
        };
        testSuites = lib.genAttrs testSuites
          (t: named "testSuites.${t}" (import ./modules/test-suite.nix t));
      };

      overlays.default = import ./modules/overlay.nix;
    };
}
