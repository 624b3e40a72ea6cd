"""Run ``nix build`` and inspect its results (Nix 2.8 CLI).

Django-free: argv lists in, plain data out. Every subprocess is an argv list
(never a shell), and a build runs in its own session so that cancelling it
can take down everything it started.

Nix 2.8 quirks this module is written around:

* ``-L`` is not a flag of its own in 2.8: it *sets the log format* to
  ``bar-with-logs``. Placed after ``--log-format internal-json`` it silently
  replaces it with human text; placed before, it is overridden and harmless.
  internal-json carries build log lines either way.
* ``nix build --json`` lists results in no particular order when given
  several installables.
* ``nix path-info --json`` returns a list of objects (newer Nix: an object
  keyed by path); both are accepted.
* ``nix store diff-closures`` colours its output even off a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from builds.nixlog import strip_ansi

NIX = "nix"
REQUIRED_FEATURES = "nix-command flakes"
BOOTSPEC_KEY = "org.nixos.bootspec.v1"
# initrd is optional in bootspec v1 (a kernel may boot without one).
_BOOTSPEC_REQUIRED = {"init": str, "kernel": str, "kernelParams": list, "label": str, "system": str, "toplevel": str}
_BOOTSPEC_OPTIONAL = {"initrd": str}


class NixError(RuntimeError):
    """A nix command (other than the build itself) failed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        """Keep what is needed to show the failure: the command and its text."""
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = strip_ansi(stderr).strip()
        super().__init__(f"{' '.join(self.argv)} exited {returncode}: {self.stderr[-2000:]}")


class BuildTimeout(Exception):
    """:func:`run_build` gave up on a build and killed it."""

    def __init__(self, timeout: float, returncode: int, stdout: str) -> None:
        """Keep the exit status and output of the killed build."""
        self.timeout = timeout
        self.returncode = returncode
        self.stdout = stdout
        super().__init__(f"nix build killed after {timeout:g}s")


# -- argv and environment ----------------------------------------------------


def build_argv(
    *,
    flake_dir: str,
    attr: str,
    out_link: str,
    extra: Iterable[str] = (),
    offline: bool = False,
) -> list[str]:
    """argv for building ``path:<flake_dir>#<attr>`` with a machine-readable log.

    ``path:`` rather than a plain directory so nix does not go looking for a
    git repository and ignore untracked files. The lock file is written (no
    ``--no-write-lock-file``): for a generated flake dir it is the record of
    exactly which input revisions a build used, and for an input-less flake
    nix 2.8 writes none at all.

    ``offline=True`` adds ``--offline``, which in 2.8 turns substituters off
    (unless a setting overrides them) and makes cached flake inputs never
    expire, so no network is tried. It is off by default because a real
    NixOS build wants cache.nixos.org; for the same reason substituters are
    left as nix.conf has them rather than forced with ``--option``.
    """
    argv = [NIX, "build"]
    if offline:
        argv.append("--offline")
    # -L must precede --log-format, see the module docstring.
    argv += ["-L", "--log-format", "internal-json", "--json", "--out-link", out_link]
    argv += list(extra)
    argv.append(f"path:{flake_dir}#{attr}")
    return argv


def nix_env(base: dict[str, str] | None = None, *, remote: str | None = None) -> dict[str, str]:
    """Environment for nix subprocesses: ``base`` (default ``os.environ``)
    with nix-command and flakes enabled, and ``NIX_REMOTE`` set to
    ``remote`` when given (``"daemon"``: build through the nix-daemon, as
    its build users in its sandbox, even when the caller is root).

    ``extra-experimental-features`` adds to whatever nix.conf or an existing
    NIX_CONFIG enables instead of replacing it; lines appended to NIX_CONFIG
    keep the caller's own settings.
    """
    env = dict(os.environ if base is None else base)
    if remote:
        env["NIX_REMOTE"] = remote
    config = env.get("NIX_CONFIG", "")
    line = f"extra-experimental-features = {REQUIRED_FEATURES}"
    if line not in config.splitlines():
        kept = config.rstrip("\n")
        env["NIX_CONFIG"] = kept + "\n" + line if kept.strip() else line
    return env


# -- output parsing ------------------------------------------------------------


def parse_build_json(stdout: str) -> list[dict[str, Any]]:
    """``nix build --json`` stdout -> ``[{"drv_path": str, "outputs": {name: path}}]``.

    Empty output (a failed build prints nothing) gives ``[]``; anything that
    is not the expected shape raises ValueError.
    """
    if not stdout.strip():
        return []
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise ValueError(f"nix build --json printed invalid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError("nix build --json: expected a list")
    results = []
    for item in data:
        outputs = item.get("outputs") if isinstance(item, dict) else None
        drv = item.get("drvPath") if isinstance(item, dict) else None
        if not isinstance(drv, str) or not isinstance(outputs, dict):
            raise ValueError(f"nix build --json: unexpected entry {item!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in outputs.items()):
            raise ValueError(f"nix build --json: unexpected outputs {outputs!r}")
        results.append({"drv_path": drv, "outputs": dict(outputs)})
    return results


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a short nix query, return stdout, raise NixError on failure."""
    proc = subprocess.run(
        argv,
        env=nix_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise NixError(argv, proc.returncode, proc.stderr)
    return proc.stdout


# Queries are about paths already in the local store. Without --offline, 2.8
# "realises" a missing store path argument, i.e. asks every substituter for
# it (seconds of retries when offline) instead of failing at once.
_QUERY = (NIX, "--offline")


def _store_path(path: str) -> str:
    # Out-links are symlinks; resolving them here means nix never has to
    # guess whether a path is a flake ("does not contain a 'flake.nix',
    # searching up").
    return os.path.realpath(path)


def path_info_size(path: str, *, env: dict[str, str] | None = None) -> int:
    """Closure size in bytes (``nix path-info -S --json``) of a store path or out-link.

    Raises NixError when the path is not in the local store.
    """
    argv = [*_QUERY, "path-info", "-S", "--json", _store_path(path)]
    data = json.loads(_run(argv, env))
    # 2.8: [{"path": ..., "closureSize": ...}], or {"path": ..., "valid": false}
    # entries (exit status 0!) for missing paths; newer Nix: {path: {...}}.
    infos = list(data.values()) if isinstance(data, dict) else data
    for info in infos:
        if isinstance(info, dict) and isinstance(info.get("closureSize"), int):
            return int(info["closureSize"])
    raise NixError(argv, 0, f"{argv[-1]} is not a valid store path")


def diff_closures(a: str, b: str, *, env: dict[str, str] | None = None) -> str:
    """``nix store diff-closures a b``, colours stripped.

    Empty when no package changed version or size by 8 KiB or more.
    """
    argv = [*_QUERY, "store", "diff-closures", _store_path(a), _store_path(b)]
    return strip_ansi(_run(argv, env)).rstrip("\n")


def read_bootspec(out_path: str) -> dict[str, Any] | None:
    """The ``org.nixos.bootspec.v1`` document of a NixOS toplevel.

    Returns ``{init, initrd, kernel, kernelParams, label, system, toplevel}``
    (``initrd`` None when absent), None when ``<out>/boot.json`` does not
    exist (not a toplevel, or NixOS older than bootspec), and raises
    ValueError naming the problem when it exists but is malformed.
    """
    path = os.path.join(out_path, "boot.json")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    spec = doc.get(BOOTSPEC_KEY) if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: no {BOOTSPEC_KEY} object")
    result: dict[str, Any] = {}
    for key, typ in {**_BOOTSPEC_REQUIRED, **_BOOTSPEC_OPTIONAL}.items():
        value = spec.get(key)
        if value is None and key in _BOOTSPEC_OPTIONAL:
            result[key] = None
            continue
        if not isinstance(value, typ):
            raise ValueError(f"{path}: {BOOTSPEC_KEY}.{key} must be a {typ.__name__}, got {value!r}")
        result[key] = value
    if not all(isinstance(p, str) for p in result["kernelParams"]):
        raise ValueError(f"{path}: {BOOTSPEC_KEY}.kernelParams must be a list of strings")
    return result


# -- running builds --------------------------------------------------------------


# RQ runs a job in a work horse and kills the horse's process group on
# timeout or stop; nix lives in a session of its own (so cancelling can kill
# nix and its builders together), so without this a killed horse would leave
# nix building for nobody. util-linux's setpriv sets PR_SET_PDEATHSIG and
# execs nix, which keeps it: nix gets SIGTERM (and stops its builders) when
# the process that spawned it dies. Unlike a preexec_fn this lets Python
# spawn with vfork, which matters for start-up latency in a large worker.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "SIGTERM", "--"]


def spawn_build(argv: Sequence[str], *, cwd: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a build in a new session (so its process group id is its pid).

    stdout (the ``--json`` result) and stderr (the log) are both pipes in
    text mode; undecodable bytes from a builder become U+FFFD rather than
    an exception. stdin is /dev/null so nix can never wait on a question.
    """
    return subprocess.Popen(
        DIE_WITH_PARENT + list(argv),
        cwd=cwd,
        env=nix_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )


def _descendants(pid: int) -> set[int]:
    """pids below ``pid`` in the process tree (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited while we looked
        # The command name may contain spaces and parens: ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _groups_under(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants (and ``pid``'s own)."""
    groups = {pid}
    for child in _descendants(pid):
        try:
            groups.add(os.getpgid(child))
        except ProcessLookupError:
            pass  # exited since we listed it
    return groups


def _signal_groups(pgids: Iterable[int], sig: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> int:
    """Stop a build started by :func:`spawn_build`; return its exit status.

    SIGTERM to the build's process group lets nix clean up (it kills its
    builders itself), then SIGKILL after ``grace`` seconds for whatever is
    left. Nix runs each builder in a session of its own, so the builders'
    process groups are collected too and get the SIGKILL: without that, a
    nix that had to be SIGKILLed would orphan a running build. Safe to call
    from another thread than the one waiting on the build.
    """
    if proc.poll() is not None:
        return proc.returncode
    groups = _groups_under(proc.pid)
    _signal_groups([proc.pid], signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        groups |= _groups_under(proc.pid)  # builders nix started meanwhile
    # Even when nix exited in time, a builder that ignored nix's own signal
    # may still be alive in its group.
    _signal_groups(groups, signal.SIGKILL)
    return proc.wait()


def _drain(stream: Any, sink: list[str]) -> None:
    sink.append(stream.read())


def run_build(
    argv: Sequence[str],
    *,
    cwd: str,
    on_line: Callable[[str], None],
    env: dict[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    timeout: float | None = None,
) -> tuple[int, str]:
    """Run a build, calling ``on_line`` for each stderr line as it arrives.

    Returns ``(exit_code, stdout)``. stdout is read by a thread while this
    one reads stderr, so neither pipe can fill up and stall nix.
    ``on_start`` gets the Popen (e.g. to record the pid for cancelling).
    After ``timeout`` seconds the build is killed and BuildTimeout raised.
    If ``on_line`` raises, the build is killed and the exception propagates.
    """
    proc = spawn_build(argv, cwd=cwd, env=env)
    stdout: list[str] = []
    reader = threading.Thread(target=_drain, args=(proc.stdout, stdout), daemon=True)
    reader.start()
    timed_out = threading.Event()
    timer = None
    if timeout is not None:

        def expire() -> None:
            timed_out.set()
            kill_group(proc)  # from this thread; the stderr loop below then hits EOF

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    try:
        if on_start is not None:
            on_start(proc)
        assert proc.stderr is not None
        for line in proc.stderr:
            on_line(line.rstrip("\n"))
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        returncode = proc.wait()
        reader.join()
        proc.stderr.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
    out = stdout[0] if stdout else ""
    if timed_out.is_set():
        raise BuildTimeout(timeout or 0, returncode, out)
    return returncode, out


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> bool:
    """True once none of ``pids`` is running (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if _alive(pid)}
        if pending:
            time.sleep(0.05)
    return not pending


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
