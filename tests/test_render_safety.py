"""No user text is spliced into Nix unescaped: arbitrary strings in every
string field reach Nix's evaluator *exactly* — checked with the real
`nix eval`, offline, through the stand-in nixos-flake."""

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from builds.nixcmd import nix_env
from guests.flake import nix_string, render_files, write_files
from tests.helpers import sample_settings

# Any unicode but NUL (which neither JSON text in Nix nor a form allows) and
# lone surrogates (not encodable as UTF-8). Weighted towards Nix's specials.
SPECIAL = st.sampled_from(['"', "\\", "${", "$${", "''", "''${", "'''", "\n", "\r", "\t", "$", "{", "}", "#", "/*"])
TEXT = st.lists(st.one_of(SPECIAL, st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                                           max_size=8)), max_size=8).map("".join)

hsettings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def nix_json(argv: list[str]) -> object:
    proc = subprocess.run(argv, capture_output=True, text=True, env=nix_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@hsettings
@given(st.lists(TEXT, min_size=1, max_size=10))
def test_nix_string_round_trips(tmp_path, values):
    expr = tmp_path / "values.nix"
    expr.write_text("[ " + " ".join(nix_string(v) for v in values) + " ]\n", encoding="utf-8")
    assert nix_json(["nix-instantiate", "--eval", "--strict", "--json", str(expr)]) == values


READ_BACK = """c: {
  keys = c.users.users.kdev.openssh.authorizedKeys.keys;
  storage = c.nixos-flake.storage;
  shares = c.nixos-flake.shares;
  monitoring = c.nixos-flake.monitoring;
}"""


def subset(got: dict, wanted: dict) -> dict:
    """``got`` restricted to ``wanted``'s keys (the module system fills in defaults)."""
    return {k: got[k] for k in wanted}


@hsettings
@given(keys=st.lists(TEXT, max_size=3), device=TEXT, options=st.lists(TEXT, max_size=3),
       mkfs=st.lists(TEXT, min_size=1, max_size=3), share_opts=st.lists(TEXT, max_size=3),
       out_dir=TEXT, disk=TEXT, ops=TEXT, title=TEXT)
def test_every_string_field_reaches_nix_exactly(tmp_path_factory, keys, device, options, mkfs, share_opts,
                                                out_dir, disk, ops, title):
    monitoring = {"enable": True, "outputDir": out_dir, "blkalgn": {"enable": True, "ops": ops, "disk": disk},
                  "biolatency": {"disk": disk}}
    s = sample_settings(
        user={"name": "kdev", "extraGroups": None, "authorizedKeys": keys},
        storage={"/mnt/scratch": {"device": device, "fsType": "xfs", "options": options, "mkfsArgs": mkfs}},
        shares={"/mnt/src": {"tag": "src", "options": share_opts}},
        profiles=["monitoring"], monitoring=monitoring,
    )
    d = tmp_path_factory.mktemp("flake")
    files = render_files(s, title=title)
    write_files(files, str(d))
    got = nix_json(["nix", "eval", "--offline", "--json", f"path:{d}#nixosConfigurations.vm.config",
                    "--apply", READ_BACK])
    assert got["keys"] == keys
    assert subset(got["storage"]["/mnt/scratch"], s["storage"]["/mnt/scratch"]) == s["storage"]["/mnt/scratch"]
    assert subset(got["shares"]["/mnt/src"], s["shares"]["/mnt/src"]) == s["shares"]["/mnt/src"]
    assert got["monitoring"]["outputDir"] == out_dir
    assert subset(got["monitoring"]["blkalgn"], monitoring["blkalgn"]) == {"enable": True, "ops": ops, "disk": disk}
    assert got["monitoring"]["biolatency"]["disk"] == disk


def test_input_urls_are_nix_strings(tmp_path):
    """URLs do reach flake.nix (inputs must be literal); they are escaped
    there, and the form's grammar refuses quotes and ${ anyway."""
    s = sample_settings(sourceOverrides={"xfsprogs": 'path:/srv/x"y${z}'})
    flake = render_files(s)["flake.nix"]
    assert r'url = "path:/srv/x\"y\${z}";' in flake


@pytest.mark.parametrize("backend", ["imageless", "libvirt"])
def test_rendered_files_parse(tmp_path, backend):
    s = sample_settings(backend=backend, sourceOverrides={"linux": "github:torvalds/linux"})
    files = render_files(s, extra_module="{ pkgs, ... }: { boot.kernelParams = [ \"quiet\" ]; }",
                         title='evil"\n${title}')
    write_files(files, str(tmp_path))
    for name in files:
        if name.endswith(".nix"):
            proc = subprocess.run(["nix-instantiate", "--parse", str(Path(tmp_path) / name)],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, (name, proc.stderr)
    assert files["flake.nix"].startswith("# Rendered by kdevweb: evil\" ${title}\n")
