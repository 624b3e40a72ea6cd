# The flake nix-internal-json.log was recorded from (Nix 2.8, in a dir
# /tmp/nixt/r, so that is the path in the log):
#   nix build --offline --no-link path:$PWD#blob
#   nix copy --to file:///tmp/cache $(nix eval --raw path:$PWD#blob)
#   nix store delete $(nix eval --raw path:$PWD#blob)
#   (cd /tmp/cache && python3 -m http.server 18777 --bind 127.0.0.1) &
#   nix build -L --log-format internal-json --json --out-link /tmp/res \
#     --option substituters http://127.0.0.1:18777 --option require-sigs false \
#     path:$PWD#default 2> nix-internal-json.log
# giving one substitution over http, one build with phases and one failing
# build, whose failure stops the top-level derivation.
{
  outputs = { self }: let
    mk = name: script: deps: builtins.derivation {
      inherit name deps;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
    };
    # Served from a local http binary cache when recording, so the log has
    # substitution / download activities as well as builds.
    blob = mk "t-blob" "i=0; while [ $i -lt 3000 ]; do echo line $i of some filler text for size; i=$((i+1)); done > $out" "";
    phase = p: "echo '@nix {\"action\":\"setPhase\",\"phase\":\"${p}\"}' >&2";
    lib = mk "t-lib-1.0" ''
      ${phase "configurePhase"}; echo configuring lib
      ${phase "buildPhase"}; echo compiling lib; printf '\033[32mok\033[0m lib.o\n'
      ${phase "installPhase"}; echo lib > $out
    '' "";
    bad = mk "t-bad-2.1" ''
      ${phase "buildPhase"}; echo compiling bad
      echo 'bad.c:3:1: error: expected declaration' >&2
      echo 'make: *** [Makefile:2: all] Error 1' >&2
      exit 2
    '' "${lib}";
    all = mk "t-all" "echo $deps > $out" "${blob} ${lib} ${bad}";
  in {
    packages.x86_64-linux.default = all;
    packages.x86_64-linux.blob = blob;
  };
}
