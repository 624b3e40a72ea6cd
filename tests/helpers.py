"""Plain helpers shared by tests (fixtures live in conftest.py)."""

from pathlib import Path

from guests.flake import default_settings

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "nixos-flake-standin"


def sample_settings(**overrides) -> dict:
    """A valid settings dict on the offline stand-in (what the form produces)."""
    return default_settings(nixos_flake_url=f"path:{STANDIN}", **overrides)
