"""A build's ``boot.json`` (``org.nixos.bootspec.v1``) for an imageless boot.

An imageless guest boots an external kernel, so of the bootspec only
``init``, ``initrd`` and the configuration's ``kernelParams`` matter; the
``kernel`` entry is recorded but not used. Everything that can go wrong
(no build output, a garbage-collected store path, a truncated or foreign
JSON file) raises :class:`BootSpecError` with a message a user can act on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BOOTSPEC_KEY = "org.nixos.bootspec.v1"
# Far above any real bootspec (a few hundred bytes); stops a caller from
# reading a huge file someone put in its place.
_MAX_BYTES = 1 << 20


class BootSpecError(ValueError):
    """boot.json is missing, unreadable or not a usable bootspec v1."""


@dataclass(frozen=True)
class BootSpec:
    init: str
    initrd: Path
    kernel: str
    kernel_params: tuple[str, ...]
    label: str
    toplevel: str


def _field(doc: dict[str, object], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise BootSpecError(f"{where}: {BOOTSPEC_KEY}.{key} must be a non-empty string, got {value!r}")
    return value


def read_bootspec(toplevel: str | os.PathLike[str], *, check_files: bool = True) -> BootSpec:
    """Read ``<toplevel>/boot.json`` (``toplevel`` may also be the file itself).

    With ``check_files`` the initrd and init must exist: a guest started
    from a garbage-collected build would otherwise fail inside QEMU with
    an error nobody reads.
    """
    path = Path(toplevel)
    if path.name != "boot.json":
        path = path / "boot.json"
    where = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise BootSpecError(
            f"{where} does not exist: the build output is gone (garbage-collected?) or is not a NixOS system"
        ) from None
    except OSError as exc:
        raise BootSpecError(f"{where} cannot be read: {exc.strerror}") from None
    if len(raw) > _MAX_BYTES:
        raise BootSpecError(f"{where} is larger than {_MAX_BYTES} bytes; not a bootspec")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BootSpecError(f"{where} is not valid JSON: {exc}") from None
    spec = doc.get(BOOTSPEC_KEY) if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        raise BootSpecError(f"{where} has no {BOOTSPEC_KEY} object")
    params = spec.get("kernelParams", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise BootSpecError(f"{where}: {BOOTSPEC_KEY}.kernelParams must be a list of strings")
    init = _field(spec, "init", where)
    initrd = spec.get("initrd")
    if initrd is None:
        # Optional in bootspec v1, but an imageless system cannot mount its
        # virtiofs root without the initrd.
        raise BootSpecError(f"{where} names no initrd; an imageless guest needs one")
    boot = BootSpec(
        init=init,
        initrd=Path(_field(spec, "initrd", where)),
        kernel=_field(spec, "kernel", where),
        kernel_params=tuple(params),
        label=label if isinstance(label := spec.get("label"), str) else "",
        toplevel=_field(spec, "toplevel", where),
    )
    if not init.startswith("/"):
        raise BootSpecError(f"{where}: init must be an absolute path, got {init!r}")
    if check_files:
        for what, file in (("initrd", boot.initrd), ("init", Path(init))):
            if not file.exists():
                raise BootSpecError(
                    f"the build's {what} {file} is gone (garbage-collected?); rebuild the configuration"
                )
            if not os.access(file, os.R_OK):
                raise BootSpecError(f"the build's {what} {file} is not readable")
    return boot
