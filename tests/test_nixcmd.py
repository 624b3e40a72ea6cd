"""Tests for builds.nixcmd with the real nix (2.8 here).

Every build is of a tiny offline flake written to tmp_path: builder /bin/sh
(the sandbox is off on this machine, so host paths are visible), no
nixpkgs. A per-test salt keeps nix from reusing earlier results.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builds.nixcmd import (
    BuildTimeout,
    NixError,
    build_argv,
    diff_closures,
    kill_group,
    nix_env,
    parse_build_json,
    path_info_size,
    read_bootspec,
    run_build,
    spawn_build,
    wait_gone,
)
from builds.nixlog import LogEvent, NixProgress, error_excerpt

needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix not installed")

FLAKE = """
{
  outputs = { self }: let
    mk = name: script: deps: builtins.derivation {
      inherit name deps;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      salt = "@SALT@";
    };
    fill = n: "i=0; while [ $i -lt ${toString n} ]; do echo filler line $i; i=$((i+1)); done";
    dep = mk "t-dep" "echo dep > $out" "";
    lib1 = mk "t-lib-1.0" "${fill 10} > $out" "";
    lib2 = mk "t-lib-2.0" "${fill 3000} > $out" "";
  in {
    packages.x86_64-linux = {
      ok = mk "t-ok" "echo hello from ok; echo to stderr >&2; echo ${dep} > $out" "${dep}";
      bad = mk "t-bad" "echo about to fail; echo oops >&2; exit 3" "${dep}";
      sys1 = mk "t-sys" "echo ${lib1} > $out" "${lib1}";
      sys2 = mk "t-sys" "echo ${lib2} > $out" "${lib2}";
      sleeper = mk "t-sleeper" "echo builder $$; /bin/sleep 300 & echo child $!; wait" "";
    };
  };
}
"""


@pytest.fixture
def flake(tmp_path: Path) -> Path:
    src = tmp_path / "flake"
    src.mkdir()
    (src / "flake.nix").write_text(FLAKE.replace("@SALT@", f"{tmp_path}-{time.time_ns()}"))
    return src


def build(flake: Path, attr: str, **kwargs) -> tuple[int, str, list[str]]:
    lines: list[str] = []
    argv = build_argv(flake_dir=str(flake), attr=attr, out_link=str(flake.parent / f"result-{attr}"), offline=True)
    code, stdout = run_build(argv, cwd=str(flake.parent), on_line=lines.append, **kwargs)
    return code, stdout, lines


# -- pure helpers --------------------------------------------------------------


def test_build_argv() -> None:
    argv = build_argv(flake_dir="/w/f", attr="toplevel", out_link="/w/result", extra=["--keep-going"])
    assert argv[:2] == ["nix", "build"]
    assert argv.index("-L") < argv.index("--log-format")
    assert argv[argv.index("--log-format") + 1] == "internal-json"
    assert argv[argv.index("--out-link") + 1] == "/w/result"
    assert "--json" in argv and "--keep-going" in argv and "--offline" not in argv
    assert argv[-1] == "path:/w/f#toplevel"
    assert "--offline" in build_argv(flake_dir="/w/f", attr="x", out_link="/w/r", offline=True)


def test_nix_env_adds_features_without_clobbering() -> None:
    env = nix_env({"PATH": "/bin", "NIX_CONFIG": "cores = 1\n"})
    assert env["PATH"] == "/bin"
    assert env["NIX_CONFIG"].splitlines() == ["cores = 1", "extra-experimental-features = nix-command flakes"]
    assert nix_env(env) == env  # idempotent
    assert nix_env({})["NIX_CONFIG"] == "extra-experimental-features = nix-command flakes"
    assert "HOME" in nix_env() or "HOME" not in os.environ


def test_parse_build_json() -> None:
    out = '[{"drvPath":"/nix/store/a-x.drv","outputs":{"out":"/nix/store/b-x","dev":"/nix/store/c-x-dev"}}]'
    assert parse_build_json(out) == [
        {"drv_path": "/nix/store/a-x.drv", "outputs": {"out": "/nix/store/b-x", "dev": "/nix/store/c-x-dev"}}
    ]
    assert parse_build_json("") == [] and parse_build_json("\n") == []
    for bad in ["nope", "{}", "[1]", '[{"drvPath":1,"outputs":{}}]', '[{"drvPath":"x","outputs":{"out":1}}]']:
        with pytest.raises(ValueError):
            parse_build_json(bad)


BOOT = {
    "org.nixos.bootspec.v1": {
        "init": "/nix/store/s-nixos-system/init",
        "initrd": "/nix/store/i-initrd/initrd",
        "kernel": "/nix/store/k-linux/bzImage",
        "kernelParams": ["console=ttyS0", "loglevel=4"],
        "label": "NixOS 26.05 (Linux 6.12)",
        "system": "x86_64-linux",
        "toplevel": "/nix/store/s-nixos-system",
    },
    "org.nixos.specialisation.v1": {},
}


def test_read_bootspec(tmp_path: Path) -> None:
    assert read_bootspec(str(tmp_path)) is None
    (tmp_path / "boot.json").write_text(json.dumps(BOOT))
    spec = read_bootspec(str(tmp_path))
    assert spec == BOOT["org.nixos.bootspec.v1"]
    no_initrd = json.loads(json.dumps(BOOT))
    del no_initrd["org.nixos.bootspec.v1"]["initrd"]
    (tmp_path / "boot.json").write_text(json.dumps(no_initrd))
    assert read_bootspec(str(tmp_path))["initrd"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "no org.nixos.bootspec.v1"),
        ('{"org.nixos.bootspec.v1": 3}', "no org.nixos.bootspec.v1"),
        ("DROP:kernel", "kernel must be a str"),
        ("SET:kernelParams=quiet", "kernelParams must be a list"),
        ("SET:kernelParams=[1]", "list of strings"),
    ],
)
def test_read_bootspec_malformed(tmp_path: Path, text: str, message: str) -> None:
    doc = json.loads(json.dumps(BOOT))
    spec = doc["org.nixos.bootspec.v1"]
    if text.startswith("DROP:"):
        del spec[text[5:]]
        text = json.dumps(doc)
    elif text.startswith("SET:"):
        key, value = text[4:].split("=", 1)
        spec[key] = json.loads(value) if value.startswith("[") else value
        text = json.dumps(doc)
    (tmp_path / "boot.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_bootspec(str(tmp_path))


# -- real builds ------------------------------------------------------------------


@needs_nix
def test_successful_build(flake: Path) -> None:
    code, stdout, lines = build(flake, "ok")
    assert code == 0
    [result] = parse_build_json(stdout)
    assert result["drv_path"].endswith("-t-ok.drv")
    out = result["outputs"]["out"]
    assert out.startswith("/nix/store/") and out.endswith("-t-ok")
    assert os.path.realpath(flake.parent / "result-ok") == out
    # The log is the machine-readable stream, and it parses.
    assert all(line.startswith("@nix {") for line in lines)
    progress = NixProgress()
    events = [e for line in lines for e in progress.feed(line)]
    texts = [(e.drv, e.text) for e in events if isinstance(e, LogEvent) and e.source == "build"]
    assert ("t-ok", "hello from ok") in texts and ("t-ok", "to stderr") in texts
    assert progress.snapshot()["builds"]["done"] == 2  # t-dep and t-ok
    assert progress.snapshot()["error_lines"] == 0


@needs_nix
def test_failing_build(flake: Path) -> None:
    code, stdout, lines = build(flake, "bad")
    assert code == 1
    assert parse_build_json(stdout) == []
    excerpt = error_excerpt(lines)
    assert "error: builder for '/nix/store/" in excerpt and "-t-bad.drv' failed with exit code 3" in excerpt
    assert excerpt.endswith("t-bad> about to fail\nt-bad> oops")
    assert not (flake.parent / "result-bad").exists()


@needs_nix
def test_evaluation_error(flake: Path) -> None:
    code, stdout, lines = build(flake, "nope")
    assert (code, stdout) == (1, "")
    assert "does not provide attribute 'packages.x86_64-linux.nope'" in error_excerpt(lines)


@needs_nix
def test_path_info_size(flake: Path) -> None:
    code, stdout, _ = build(flake, "ok")
    assert code == 0
    out = parse_build_json(stdout)[0]["outputs"]["out"]
    size = path_info_size(out)
    assert size > 0
    # The out-link resolves to the same path; the closure includes t-dep.
    assert path_info_size(str(flake.parent / "result-ok")) == size
    dep = Path(out).read_text().strip()
    assert path_info_size(dep) < size
    with pytest.raises(NixError):
        path_info_size("/nix/store/00000000000000000000000000000000-missing")


@needs_nix
def test_diff_closures(flake: Path) -> None:
    outs = {}
    for attr in ("sys1", "sys2"):
        code, stdout, _ = build(flake, attr)
        assert code == 0
        outs[attr] = parse_build_json(stdout)[0]["outputs"]["out"]
    diff = diff_closures(outs["sys1"], outs["sys2"])
    assert diff.startswith("t-lib: 1.0 → 2.0, +")
    assert "KiB" in diff and "\x1b" not in diff
    assert diff_closures(outs["sys1"], outs["sys1"]) == ""


def _sleeper_pids(proc: subprocess.Popen[str]) -> tuple[list[int], list[str]]:
    """Read the sleeper build's log until the builder has printed its pids."""
    progress, pids, lines = NixProgress(), {}, []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        for event in progress.feed(line):
            if isinstance(event, LogEvent) and event.source == "build":
                word, _, pid = event.text.partition(" ")
                pids[word] = int(pid)
        if "builder" in pids and "child" in pids:
            return _host_pids(proc.pid), lines
    raise AssertionError("sleeper never started: " + "".join(lines))


def _host_pids(nix_pid: int) -> list[int]:
    """The sleeper's builder and child as the host sees them: in the sandbox
    (a PID namespace, build users) the pids it prints are its own (1, 2...)."""
    from builds.nixcmd import _descendants

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = {}
        for pid in _descendants(nix_pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"echo builder" in cmd:
                found["builder"] = pid
            elif cmd.startswith(b"/bin/sleep\x00300"):
                found["child"] = pid
        if len(found) == 2:
            return [found["builder"], found["child"]]
        time.sleep(0.05)
    raise AssertionError("the sleeper's processes are not below nix")


@needs_nix
def test_kill_group_stops_nix_and_its_builders(flake: Path) -> None:
    argv = build_argv(flake_dir=str(flake), attr="sleeper", out_link=str(flake.parent / "r"), offline=True)
    proc = spawn_build(argv, cwd=str(flake.parent), env=nix_env())
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        pids, _ = _sleeper_pids(proc)
        assert all(wait_gone([pid], timeout=0) is False for pid in pids)
        # Nix puts the builder in a session of its own: not our group.
        assert os.getpgid(pids[0]) != proc.pid
        started = time.monotonic()
        code = kill_group(proc, grace=10)
        assert code != 0 and proc.poll() is not None
        assert wait_gone(pids, timeout=10), "builder or its child survived"
        assert time.monotonic() - started < 60
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert kill_group(proc) == code  # already dead: just the status


@needs_nix
def test_run_build_timeout_kills_the_build(flake: Path) -> None:
    progress, pids, nix = NixProgress(), [], []

    def on_line(line: str) -> None:
        for event in progress.feed(line):
            if isinstance(event, LogEvent) and event.source == "build" and event.text.startswith("child"):
                pids.extend(_host_pids(nix[0].pid))  # both printed: builder, then child

    argv = build_argv(flake_dir=str(flake), attr="sleeper", out_link=str(flake.parent / "r"), offline=True)
    started = time.monotonic()
    with pytest.raises(BuildTimeout) as info:
        run_build(argv, cwd=str(flake.parent), on_line=on_line, timeout=3, on_start=nix.append)
    assert 3 <= time.monotonic() - started < 60
    assert info.value.returncode != 0 and info.value.stdout == ""
    assert len(pids) == 2 and wait_gone(pids, timeout=10)


@needs_nix
def test_run_build_callback_error_kills_the_build(flake: Path) -> None:
    started: list[subprocess.Popen[str]] = []

    def on_line(line: str) -> None:
        if '"child ' in line:
            raise RuntimeError("consumer failed")

    argv = build_argv(flake_dir=str(flake), attr="sleeper", out_link=str(flake.parent / "r"), offline=True)
    with pytest.raises(RuntimeError, match="consumer failed"):
        run_build(argv, cwd=str(flake.parent), on_line=on_line, on_start=started.append)
    assert started[0].poll() is not None


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# Like nix's builders: a child in a session (and process group) of its own.
child = subprocess.Popen(["/bin/sleep", "300"], start_new_session=True)
print(child.pid, file=sys.stderr, flush=True)
time.sleep(300)
"""


def test_kill_group_sigkills_what_ignores_sigterm_including_own_sessions(tmp_path: Path) -> None:
    proc = spawn_build([sys.executable, "-c", STUBBORN], cwd=str(tmp_path), env=dict(os.environ))
    try:
        assert proc.stderr is not None
        child = int(proc.stderr.readline())
        assert os.getpgid(child) != proc.pid
        started = time.monotonic()
        assert kill_group(proc, grace=1) == -signal.SIGKILL
        assert 1 <= time.monotonic() - started < 30
        assert wait_gone([child], timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
