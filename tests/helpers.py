"""Plain helpers shared by tests (fixtures live in conftest.py)."""

from pathlib import Path

from guests.flake import STATE_VERSION

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "nixos-flake-standin"


def sample_settings(**overrides) -> dict:
    """A valid settings dict on the offline stand-in (what the form produces)."""
    s = {
        "backend": "imageless",
        "mode": "guest",
        "nixosFlakeUrl": f"path:{STANDIN}",
        "hostName": "kdev",
        "user": {"name": "kdev", "extraGroups": None, "authorizedKeys": []},
        "profiles": [],
        "controller": False,
        "monitoring": None,
        "testSuites": [],
        "extraPackages": [],
        "sourceOverrides": {},
        "shares": {},
        "storage": {},
        "memoryMiB": 1024,
        "vcpus": 2,
        "diskSizeMiB": 20480,
        "stateVersion": STATE_VERSION,
    }
    s.update(overrides)
    return s
