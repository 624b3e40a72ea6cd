# profiles.build-tools: what building a kernel needs (no options).
{ pkgs, ... }:
{
  environment.systemPackages = with pkgs; [
    gcc gnumake bison flex bc elfutils openssl ncurses pahole ccache kmod python3
  ];
}
