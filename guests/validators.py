"""Grammars for configuration fields that end up as names in a guest.

Free text (SSH keys, mount options, paths inside the guest) is allowed
anything but NUL, because it travels as JSON data; the fields below have a
grammar because NixOS, the kernel or Nix itself gives them one, and a bad
value is far cheaper to reject in the form than to debug in a failed build.
"""

import base64
import binascii
import re
import shlex
import subprocess

from django.core.exceptions import ValidationError

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ATTR_NAME = r"[A-Za-z_][A-Za-z0-9_'-]*"
ATTR_PATH_RE = re.compile(rf"^{ATTR_NAME}(\.{ATTR_NAME})*$")
PKG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MOUNT_POINT_RE = re.compile(r"^/[A-Za-z0-9._@+=,:/-]*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.-]{1,36}$")  # virtiofs tags are at most 36 bytes
FSTYPE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
GROUP_RE = USERNAME_RE
# Flake references kdevweb accepts. No whitespace, quotes, backslashes or
# `${`: they are not valid in a flake URL and would only hide mistakes.
URL_SCHEMES = ("github:", "gitlab:", "sourcehut:", "git+https://", "git+ssh://", "git+file:", "path:",
               "https://", "http://", "tarball+https://", "file:")
NIXOS_FLAKE_SCHEMES = ("github:", "gitlab:", "git+https://", "git+ssh://", "git+file:", "path:")
URL_BODY_RE = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]+$")


def validate_hostname(value: str) -> None:
    if not HOSTNAME_RE.match(value):
        raise ValidationError(
            "A host name is 1–63 letters, digits or hyphens, not starting or ending with a hyphen "
            "(no dots: NixOS takes the short name)."
        )


def validate_username(value: str) -> None:
    if not USERNAME_RE.match(value):
        raise ValidationError(
            f"“{value}” is not a valid user or group name: lowercase letters, digits, _ or -, "
            "starting with a letter or _, at most 32 characters."
        )


def validate_attr_path(value: str) -> None:
    if not ATTR_PATH_RE.match(value):
        raise ValidationError(
            f"“{value}” is not a package attribute path (like fio or python3Packages.pytest)."
        )


def validate_pkg_name(value: str) -> None:
    if not PKG_NAME_RE.match(value):
        raise ValidationError(f"“{value}” is not a package attribute name (letters, digits, _ and -).")


def validate_mount_point(value: str) -> None:
    parts = value.split("/")[1:]
    # NixOS' fileSystems.<name>.mountPoint is "non-empty without trailing slash".
    if not MOUNT_POINT_RE.match(value) or any(p in ("", ".", "..") for p in parts):
        raise ValidationError(
            f"“{value}” is not a mount point: an absolute path below / without spaces, "
            "empty, . or .. parts, or a trailing slash."
        )
    clash = system_mount_clash(value)
    if clash:
        raise ValidationError(clash)


# Mount points the guest itself needs: the root, the (virtiofs) store and
# kernel modules of the imageless backend, and the API file systems.
SYSTEM_MOUNTS = ("/", "/nix/store", "/lib/modules", "/proc", "/sys", "/dev", "/run", "/etc")


def system_mount_clash(value: str) -> str:
    """Why ``value`` may not be a share or storage mount point ("" if it may)."""
    for mp in SYSTEM_MOUNTS:
        below = value.startswith(mp.rstrip("/") + "/") and mp in ("/nix/store", "/lib/modules")
        above = mp.startswith(value + "/") and mp in ("/nix/store", "/lib/modules")
        if value == mp or below or above:
            return (f"“{value}” collides with the guest's own {mp} mount "
                    "(/, /nix/store, /lib/modules and the system directories are the backend's).")
    return ""


# Accounts NixOS or the closure defines itself: a login user of that name
# would be a second, conflicting definition.
RESERVED_USERS = frozenset({"root", "nobody", "sshd", "messagebus", "nscd", "polkituser", "statd", "rpc"})
RESERVED_USER_PREFIXES = ("systemd-", "nixbld")
# testSuites.fstests creates these users and groups with fixed ids.
FSTESTS_USERS = frozenset({"fsgqa", "fsgqa2", "123456-fsgqa", "daemon", "bin", "sys"})


def validate_login_name(value: str, *, fstests: bool = False) -> None:
    if value in RESERVED_USERS or value.startswith(RESERVED_USER_PREFIXES):
        raise ValidationError(f"“{value}” is a system account NixOS defines itself; choose another user name.")
    if fstests and value in FSTESTS_USERS:
        raise ValidationError(
            f"“{value}” is one of the accounts testSuites.fstests creates ({', '.join(sorted(FSTESTS_USERS))}); "
            "choose another user name or leave out fstests.")


STATE_VERSION_RE = re.compile(r"^[0-9]{2}\.(05|11)$")


def validate_state_version(value: str) -> None:
    if value and not STATE_VERSION_RE.match(value):
        raise ValidationError(f"“{value}” is not a NixOS release like 25.11 or 26.05.")


SERVICE_PATH_RE = re.compile(r"^/[^\s\x00]*$")
DISK_RE = re.compile(r"^[A-Za-z0-9._/:-]*$")


def validate_service_path(value: str) -> None:
    """A path spliced into a systemd ExecStart line by the module: absolute, no white space."""
    if value and not SERVICE_PATH_RE.match(value):
        raise ValidationError(f"“{value}” is not an absolute path without white space.")


def validate_disk(value: str) -> None:
    if not DISK_RE.match(value):
        raise ValidationError(f"“{value}” is not a disk name (like vdb, nvme0n1 or /dev/vdb).")


def validate_tag(value: str) -> None:
    if not TAG_RE.match(value):
        raise ValidationError(f"“{value}” is not a virtiofs tag: 1–36 letters, digits, ., _ or -.")


def validate_fstype(value: str) -> None:
    if not FSTYPE_RE.match(value):
        raise ValidationError(f"“{value}” is not a file system type (like ext4, xfs, btrfs).")


def validate_flake_url(value: str, schemes: tuple[str, ...] = URL_SCHEMES) -> None:
    if not value.startswith(schemes) or "${" in value or not URL_BODY_RE.match(value):
        raise ValidationError(
            f"“{value}” is not a flake URL kdevweb accepts: it must start with one of "
            f"{', '.join(schemes)} and contain no spaces, quotes, backslashes or ${{."
        )
    validate_source_location(value)


def validate_nixos_flake_url(value: str) -> None:
    validate_flake_url(value, NIXOS_FLAKE_SCHEMES)


# Where an operator may point a source (issue 7). Local ones are fetched by
# kdevweb's nix client and copied into the world-readable store, so they are
# allowed only under directories an admin lists in settings.
REMOTE_SOURCE_SCHEMES = ("github:", "gitlab:", "sourcehut:", "git+https://", "https://", "tarball+https://")
LOCAL_SOURCE_SCHEMES = ("path:", "git+file:", "file:")


def validate_source_location(value: str) -> None:
    """Remote sources over HTTPS; local ones only below settings.ALLOWED_SOURCE_ROOTS,
    compared after resolving symlinks and `..` (os.path.realpath)."""
    import os

    from django.conf import settings

    if value.startswith(REMOTE_SOURCE_SCHEMES):
        return
    if not value.startswith(LOCAL_SOURCE_SCHEMES):
        raise ValidationError(
            f"“{value}” is not a source kdevweb may fetch: use one of {', '.join(REMOTE_SOURCE_SCHEMES)}, "
            "or path:/git+file: under a directory an admin allows."
        )
    path = value.split(":", 1)[1].split("?", 1)[0].split("#", 1)[0]
    if path.startswith("//"):
        path = path[2:]  # path:///srv/x; file://host/x stays relative and is refused
    roots = [os.path.realpath(r) for r in settings.ALLOWED_SOURCE_ROOTS]
    # nix percent-decodes URL paths: refuse % rather than decode it twice differently.
    real = os.path.realpath(path) if path.startswith("/") and "%" not in path else None
    if real is None or not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
        raise ValidationError(
            f"“{value}” is outside the directories an admin allows for local sources "
            f"(ALLOWED_SOURCE_ROOTS: {', '.join(roots) or 'none'})."
        )


def split_words(value: str) -> list[str]:
    """Split a textarea of names separated by spaces, commas or newlines."""
    return [w for w in re.split(r"[\s,]+", value) if w]


def split_lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def split_args(value: str) -> list[str]:
    """Split command-line arguments the way a shell user expects."""
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ValidationError(f"Cannot split these arguments: {exc}.") from exc


def validate_nix_syntax(text: str) -> None:
    """Reject an extra module that is not even valid Nix, before it costs a build."""
    try:
        proc = subprocess.run(
            ["nix-instantiate", "--parse", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidationError(f"Could not check the Nix syntax: {exc}.") from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
        raise ValidationError("The extra module is not valid Nix: " + " ".join(lines)[:500])


# Key types OpenSSH accepts in authorized_keys (sshkey.c's keytypes table).
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com", "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
})
_OPTIONS_RE = re.compile(r'^(?:[^\s"]|"(?:[^"\\]|\\.)*")+\s+')  # authorized_keys options before the type


def ssh_key_problem(line: str) -> str:
    """Why ``line`` is not an authorized_keys entry OpenSSH would accept ("" if it is).

    Like OpenSSH: optional options, a known key type, then base64 whose
    decoded blob starts with the same type (a length-prefixed string).
    """
    rest = line
    if rest.split(None, 1)[0] not in SSH_KEY_TYPES:
        m = _OPTIONS_RE.match(rest)  # `from="10.0.0.0/8",no-pty ssh-ed25519 AAAA...`
        if m:
            rest = rest[m.end():]
    parts = rest.split(None, 2)
    if not parts or parts[0] not in SSH_KEY_TYPES:
        return "does not start with a known key type (like ssh-ed25519 or ssh-rsa)"
    if len(parts) < 2:
        return f"has the key type {parts[0]} but no key after it"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "has a key that is not valid base64"
    if len(blob) < 4:
        return "has a key too short to be one"
    n = int.from_bytes(blob[:4], "big")
    embedded = blob[4:4 + n].decode("ascii", "replace")
    if n > len(blob) - 4 or embedded != parts[0]:
        return f"says {parts[0]} but its key data is {'a ' + embedded if embedded.isprintable() and embedded else 'something else'}"
    if len(blob) == 4 + n:
        return "has the key type but no key material"
    return ""


def authorized_keys(text: str) -> list[str]:
    """The keys of an authorized_keys text; a bad line is an error naming
    its line number (as typed: blank and comment lines count)."""
    keys, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(line)
        problem = ssh_key_problem(line)
        if problem:
            shown = line if len(line) <= 40 else line[:37] + "…"
            problems.append(f"Line {number} (“{shown}”) {problem}.")
    if problems:
        raise ValidationError(problems)
    return keys
