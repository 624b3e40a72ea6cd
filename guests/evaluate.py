"""Evaluate a rendered flake with the real ``nix`` (no build, no Django).

Evaluation is what fails first when a configuration does not fit the
nixos-flake modules (an option that does not exist, a wrong type, a failed
assertion): asking ``nix eval`` for the output's ``drvPath`` runs the whole
module system and instantiates the derivation without building anything,
in seconds rather than the minutes a build takes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from dataclasses import dataclass

from builds.nixcmd import nix_env

from .flake import write_files

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")

DEFAULT_TIMEOUT = 300.0  # seconds; a large real nixos-flake evaluation takes about a minute
MAX_ERROR = 8000  # characters of nix's message kept


@dataclass(frozen=True)
class Evaluation:
    ok: bool
    drv_path: str = ""
    error: str = ""


def eval_argv(*, flake_dir: str, output: str, offline: bool) -> list[str]:
    """argv for the drvPath of ``packages.x86_64-linux.<output>`` of a flake dir.

    ``path:`` so nix copies the directory as it is (no git lookup).
    """
    argv = ["nix", "eval"]
    if offline:
        argv.append("--offline")
    argv += ["--raw", f"path:{flake_dir}#packages.x86_64-linux.{output}.drvPath"]
    return argv


def error_text(stderr: str) -> str:
    """nix's message without colour codes or the lock-file chatter."""
    lines = [ln for ln in ANSI_RE.sub("", stderr).splitlines()
             if not ln.startswith(("warning: creating lock file", "warning: Git tree"))]
    text = "\n".join(lines).strip()
    return text[-MAX_ERROR:] if len(text) > MAX_ERROR else text


def evaluate(files: dict[str, str], *, output: str, offline: bool, timeout: float = DEFAULT_TIMEOUT,
             tmp_root: str | None = None) -> Evaluation:
    """Write ``files`` to a temporary directory and evaluate ``output`` there."""
    with tempfile.TemporaryDirectory(prefix="kdevweb-eval-", dir=tmp_root) as flake_dir:
        write_files(files, flake_dir)
        argv = eval_argv(flake_dir=flake_dir, output=output, offline=offline)
        # Own session: on a timeout the whole group goes, not just nix.
        proc = subprocess.Popen(argv, cwd=flake_dir, env=nix_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return Evaluation(ok=False, error=f"nix eval did not finish within {timeout:g} s and was stopped.")
    if proc.returncode != 0:
        return Evaluation(ok=False, error=error_text(stderr) or f"nix eval exited {proc.returncode}")
    return Evaluation(ok=True, drv_path=stdout.strip())
