"""The build page's boot.json table, in a fixed reading order.

A stored dict's key order means nothing: PostgreSQL's jsonb keeps keys sorted
by length, SQLite keeps them as written. Rows follow what a reader asks in
turn: which system, then what boots it, then how.
"""

from typing import Any

ORDER = ("label", "system", "toplevel", "kernel", "initrd", "init", "kernelParams")


def ordered(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The same document with its keys in ORDER (then the rest, sorted): the
    websocket sends it as JSON, whose object order the page keeps."""
    if spec is None:
        return None
    return {k: spec[k] for k in [k for k in ORDER if k in spec] + sorted(k for k in spec if k not in ORDER)}


def rows(spec: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``(key, value)`` rows, known keys in ORDER, any others after them
    alphabetically; lists (kernelParams) joined with spaces."""
    return [(k, " ".join(map(str, v)) if isinstance(v, list) else v) for k, v in (ordered(spec) or {}).items()]
