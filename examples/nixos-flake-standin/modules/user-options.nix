# nixos-flake.user.*: declared here once and imported (deduplicated by path)
# by both backends and by `user`, as upstream. Importing a backend alone
# declares the options without creating the account.
{ lib, ... }:
{
  options.nixos-flake.user = {
    name = lib.mkOption {
      type = lib.types.str;
      default = "user";
      description = "Name of the unprivileged account `user` creates.";
    };
    extraGroups = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Its supplementary groups; the backends set their own default with mkDefault.";
    };
  };
}
