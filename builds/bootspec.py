"""The build page's boot.json table, in a fixed reading order.

A stored dict's key order means nothing: PostgreSQL's jsonb keeps keys sorted
by length, SQLite keeps them as written. Rows follow what a reader asks in
turn: which system, then what boots it, then how.
"""

from typing import Any

ORDER = ("label", "system", "toplevel", "kernel", "initrd", "init", "kernelParams")


def rows(spec: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``(key, value)`` rows, known keys in ORDER, any others after them
    alphabetically; lists (kernelParams) joined with spaces."""
    spec = spec or {}
    keys = [k for k in ORDER if k in spec] + sorted(k for k in spec if k not in ORDER)
    return [(k, " ".join(map(str, spec[k])) if isinstance(spec[k], list) else spec[k]) for k in keys]
