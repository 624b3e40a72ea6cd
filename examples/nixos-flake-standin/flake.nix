# kdevweb's OFFLINE STAND-IN for linux-kdevops/nixos-flake.
#
# Same module names as upstream (nixosModules.backends.*, user, default,
# profiles.*, mounts.*, testSuites.*) and overlays.default, evaluated by the
# stand-in nixpkgs in ./nixpkgs (no network inputs), whose module system is
# strict like nixpkgs' (undeclared options and wrong types are errors).
# Builds run in the nix sandbox when it exposes the host tool directories
# (see README.md, "Requirements").
{
  description = "kdevweb offline stand-in for linux-kdevops/nixos-flake";

  inputs.nixpkgs.url = "path:./nixpkgs";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      testSuites = [ "blktests" "fstests" "gitr" "ltp" "mmtests" "pynfs" "selftests" "sysbench" ];

      # Every module records its own name in config.standin.importedModules
      # and is deduplicated by its key (importing `default` and `user`
      # together imports `user` once). Options are declared by the modules
      # that own them, as upstream: nixos-flake.shares exists only when
      # mounts.shares is imported, and so on.
      named = name: module: {
        key = "nixos-flake-standin#${name}";
        _file = "nixos-flake-standin#${name}";
        imports = [ module ];
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
