# Offline stand-in for nixpkgs, used by kdevweb's nixos-flake stand-in
# (../flake.nix). It is NOT nixpkgs: `lib` is a small faithful subset,
# `lib.nixosSystem` is a small strict module evaluator (typed options), the package set is a few
# dozen placeholder derivations, and nixos/lib/make-disk-image.nix makes a
# disk image that boots from its own disk (syslinux, ext4 root). See ../README.md.
{
  description = "kdevweb offline stand-in for nixpkgs (lib, nixosSystem, make-disk-image)";

  outputs = { self }:
    let
      baseLib = import ./lib.nix;

      nixosSystem = { system ? "x86_64-linux", modules, specialArgs ? { }, ... }:
        let
          pkgs = import ./pkgs.nix {
            inherit lib system;
            overlays = eval.config.nixpkgs.overlays;
          };
          eval = baseLib.evalModules {
            modules = [ ./nixos/modules/base.nix { nixpkgs.hostPlatform = system; } ] ++ modules;
            specialArgs = { inherit pkgs; modulesPath = ./nixos/modules; } // specialArgs;
          };
        in
        {
          inherit (eval) config options;
          inherit pkgs;
          # keys of every module that was evaluated, deduplicated (debugging aid)
          standinModuleKeys = eval.modules;
          type = "configuration";
        };

      lib = baseLib // { inherit nixosSystem; };
    in
    {
      inherit lib;
      legacyPackages.x86_64-linux = import ./pkgs.nix { inherit lib; };
    };
}
