"""Plain helpers shared by tests (fixtures live in conftest.py)."""

import os
from pathlib import Path

import pytest

from guests.flake import default_settings

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "nixos-flake-standin"


def sample_settings(**overrides) -> dict:
    """A valid settings dict on the offline stand-in (what the form produces)."""
    return default_settings(nixos_flake_url=f"path:{STANDIN}", **overrides)


def skip_or_fail(reason: str) -> None:
    """Skip when run by hand; fail under scripts/test (KDEVWEB_TEST_STRICT=1),
    where every real part is installed and nothing may quietly not run."""
    if os.environ.get("KDEVWEB_TEST_STRICT"):
        pytest.fail(f"required for the full suite: {reason}")
    pytest.skip(reason)
