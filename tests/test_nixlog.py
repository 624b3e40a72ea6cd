"""Tests for builds.nixlog against a log recorded from a real Nix 2.8 build.

tests/data/nix-internal-json.log was produced by the flake beside it (its
header says how): one path substituted over http, one build that reports
stdenv phases and prints ANSI colour, one build that fails, which makes the
top-level derivation fail too. Logs of other Nix versions, with and without
a daemon, are read by tests/test_nixlog_versions.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builds.nixevents import MAX_JSON_CHARS, MAX_TEXT_CHARS
from builds.nixlog import (
    ActivityEvent,
    LogEvent,
    NixProgress,
    PhaseEvent,
    ProgressEvent,
    error_excerpt,
    store_path_name,
    strip_ansi,
)

LOG = Path(__file__).parent / "data" / "nix-internal-json.log"
BAD_DRV = "/nix/store/chk1nbnbkc0gqb9srg490lpknj4yvjd8-t-bad-2.1.drv"

# Real Nix 2.8 lines for an evaluation error (undefined variable).
EVAL_ERROR = [
    '@nix {"action":"start","id":137855565299712,"level":4,"text":"copying \'/tmp/nixt/e\'","type":0}',
    '@nix {"action":"stop","id":137855565299712}',
    '@nix {"action":"msg","column":106,"file":"/nix/store/bw5kqk7hq04p6m8m32s5kfs7sgfxzw3z-source/flake.nix",'
    '"level":0,"line":3,"msg":"\\u001b[31;1merror:\\u001b[0m undefined variable \'\\u001b[35;1mundefinedThing'
    "\\u001b[0m'\\n\\n       \\u001b[34;1mat \\u001b[35;1m/nix/store/bw5kqk7hq04p6m8m32s5kfs7sgfxzw3z-source/"
    'flake.nix:3:106\\u001b[0m:\\n\\n            2|   outputs = { self }: {","raw_msg":"undefined variable"}',
    '@nix {"action":"msg","level":0,"msg":"(use \'--show-trace\' to show detailed location information)"}',
]


def recorded() -> list[str]:
    return LOG.read_text().splitlines()


def feed_all(lines: list[str], progress: NixProgress | None = None) -> tuple[NixProgress, list]:
    progress = progress or NixProgress()
    events = []
    for line in lines:
        events.extend(progress.feed(line))
    return progress, events


def test_recorded_log_is_real_and_small() -> None:
    lines = recorded()
    assert 50 < len(lines) < 200
    assert all(line.startswith("@nix {") for line in lines)


def test_build_log_lines_carry_derivation_name_and_keep_ansi() -> None:
    _, events = feed_all(recorded())
    build_lines = [(e.drv, e.text) for e in events if isinstance(e, LogEvent) and e.source == "build"]
    assert build_lines == [
        ("t-lib-1.0", "configuring lib"),
        ("t-lib-1.0", "compiling lib"),
        ("t-lib-1.0", "\x1b[32mok\x1b[0m lib.o"),
        ("t-bad-2.1", "compiling bad"),
        ("t-bad-2.1", "bad.c:3:1: error: expected declaration"),
        ("t-bad-2.1", "make: *** [Makefile:2: all] Error 1"),
    ]


def test_activity_texts_shown_like_the_cli() -> None:
    _, events = feed_all(recorded())
    texts = [e.text for e in events if isinstance(e, LogEvent) and e.source == "activity"]
    # Level <= info only: no "querying info about ..." or "downloading ..." noise.
    assert texts == [
        "copying path '/nix/store/inqrbq4f77nmv6csvl48r089a27xqljq-t-blob' from 'http://127.0.0.1:18777'",
        "building '/nix/store/b8pd8nrqszr08r0vx257c6jnqjvj56mg-t-lib-1.0.drv'",
        f"building '{BAD_DRV}'",
    ]


def test_error_messages_are_error_log_events() -> None:
    progress, events = feed_all(recorded())
    errors = [e for e in events if isinstance(e, LogEvent) and e.error]
    assert [e.source for e in errors] == ["msg", "msg"]
    assert "\x1b[31;1merror:" in errors[0].text
    assert progress.failed_drvs == [BAD_DRV]


def test_phases_and_activities() -> None:
    _, events = feed_all(recorded())
    phases = [(e.drv, e.phase) for e in events if isinstance(e, PhaseEvent)]
    assert phases == [
        ("t-lib-1.0", "configurePhase"),
        ("t-lib-1.0", "buildPhase"),
        ("t-lib-1.0", "installPhase"),
        ("t-bad-2.1", "buildPhase"),
    ]
    acts = [(e.action, e.type, e.name) for e in events if isinstance(e, ActivityEvent)]
    assert acts == [
        ("start", "substitute", "t-blob"),
        ("stop", "substitute", "t-blob"),
        ("start", "build", "t-lib-1.0"),
        ("stop", "build", "t-lib-1.0"),
        ("start", "build", "t-bad-2.1"),
        ("stop", "build", "t-bad-2.1"),
    ]


def test_snapshot_mid_build() -> None:
    progress = NixProgress()
    for line in recorded():
        progress.feed(line)
        if '"compiling lib"' in line:
            break
    snap = progress.snapshot()
    assert snap["stage"] == "building"
    assert snap["phase"] == "buildPhase"
    assert snap["current"] == ["t-lib-1.0"]
    assert snap["phases"] == {"t-lib-1.0": "buildPhase"}
    assert snap["builds"] == {"done": 0, "expected": 3, "running": 1, "failed": 0}
    assert snap["downloads"] == {"done": 1, "expected": 1, "running": 0, "failed": 0}
    assert snap["error_lines"] == 0


def test_snapshot_during_substitution() -> None:
    progress = NixProgress()
    for line in recorded():
        progress.feed(line)
        if '"fields":[57344,116008,0,0]' in line:
            break
    snap = progress.snapshot()
    assert snap["stage"] == "downloading"
    assert snap["substituting"] == ["t-blob"]
    assert snap["copy_bytes"] == {"done": 57344, "expected": 116008}
    # SetExpected on the Realise activity announced the 1552-byte NAR.
    assert snap["download_bytes"]["expected"] >= 1552
    assert snap["downloads"]["running"] == 1


def test_final_snapshot() -> None:
    progress, _ = feed_all(recorded())
    snap = progress.snapshot()
    json.dumps(snap)
    assert snap["stage"] == "finishing"
    assert snap["builds"] == {"done": 1, "expected": 1, "running": 0, "failed": 1}
    assert snap["downloads"]["done"] == 1
    assert snap["current"] == [] and snap["phase"] is None
    assert snap["failed"] == ["t-bad-2.1"]
    assert snap["error_lines"] == 2
    assert snap["log_lines"] == 11
    assert progress.tail(BAD_DRV)[-1] == "make: *** [Makefile:2: all] Error 1"


def test_progress_events_only_on_change_and_json_ready() -> None:
    lines = recorded()
    _, events = feed_all(lines)
    progress_events = [e for e in events if isinstance(e, ProgressEvent)]
    assert 5 < len(progress_events) < len(lines) // 3
    assert all(a != b for a, b in zip(progress_events, progress_events[1:]))
    assert progress_events[-1].builds["failed"] == 1
    for event in events:
        assert json.loads(json.dumps(event.to_dict()))["kind"] == event.kind


def test_plain_and_malformed_lines_become_text() -> None:
    progress = NixProgress()
    for line in ["warning: plain text\n", "@nix {not json", "@nix [1, 2]", '@nix {"no":"action"}', "@nix "]:
        events = progress.feed(line)
        assert [(e.source, e.text) for e in events if isinstance(e, LogEvent)] == [("plain", line.rstrip("\n"))]


def test_odd_but_valid_json_is_ignored_not_fatal() -> None:
    progress = NixProgress()
    odd = [
        '{"action":"start","id":"x","type":105}',
        '{"action":"start","id":1,"type":105,"fields":[42],"text":7,"level":"x"}',
        '{"action":"result","id":1,"type":105,"fields":[1,2]}',
        '{"action":"result","id":1,"type":105,"fields":[true,1,1,1]}',
        '{"action":"result","id":1,"type":106,"fields":["a",1]}',
        '{"action":"result","id":1,"type":104,"fields":[]}',
        '{"action":"result","id":99,"type":101,"fields":["orphan line"]}',
        '{"action":"stop","id":12345}',
        '{"action":"msg","msg":null}',
        '{"action":"frobnicate","id":1}',
    ]
    events = [e for line in odd for e in progress.feed("@nix " + line)]
    logs = [e for e in events if isinstance(e, LogEvent)]
    assert [(e.text, e.drv) for e in logs] == [("orphan line", None)]
    assert progress.snapshot()["builds"]["running"] == 0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_text(line: str) -> None:
    progress = NixProgress()
    progress.feed(line)
    progress.feed("@nix " + line)
    json.dumps(progress.snapshot())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"action": st.sampled_from(["start", "stop", "result", "msg"])},
        optional={
            "id": st.integers(0, 3) | _json,
            "type": st.sampled_from([0, 100, 101, 102, 103, 104, 105, 106, 107, 108]) | _json,
            "fields": st.lists(st.integers(-5, 5) | st.text(max_size=5) | _json, max_size=5) | _json,
            "level": st.integers(-1, 8) | _json,
            "text": _json,
            "msg": _json,
        },
    )
)
def test_never_raises_on_structured_junk(obj: dict) -> None:
    progress = NixProgress()
    for _ in range(2):
        progress.feed("@nix " + json.dumps(obj))
    json.dumps(progress.snapshot())


def test_set_expected_is_replaced_and_withdrawn_on_stop() -> None:
    progress = NixProgress()
    lines = [
        '{"action":"start","id":1,"level":0,"text":"","type":102}',
        '{"action":"result","id":1,"type":106,"fields":[101,100]}',
        '{"action":"result","id":1,"type":106,"fields":[101,300]}',
    ]
    feed_all(["@nix " + line for line in lines], progress)
    assert progress.snapshot()["download_bytes"] == {"done": 0, "expected": 300}
    progress.feed('@nix {"action":"stop","id":1}')
    assert progress.snapshot()["download_bytes"] == {"done": 0, "expected": 0}


def test_multiline_eval_error() -> None:
    progress, events = feed_all(EVAL_ERROR)
    errors = [e.text for e in events if isinstance(e, LogEvent) and e.error]
    assert len(errors) == 5  # the --show-trace hint is no error (nor would a web user act on it)
    assert progress.snapshot()["error_lines"] == 5
    assert progress.snapshot()["stage"] == "evaluating"
    excerpt = error_excerpt(EVAL_ERROR)
    assert excerpt.startswith("error: undefined variable 'undefinedThing'")
    assert "flake.nix:3:106" in excerpt
    assert "show-trace" not in excerpt and "\x1b" not in excerpt


def test_error_excerpt_of_failed_build() -> None:
    assert error_excerpt(recorded()) == "\n".join(
        [
            f"error: builder for '{BAD_DRV}' failed with exit code 2",
            "error: 1 dependencies of derivation '/nix/store/jivyydgi8l55kvf73hqhlgh2vs9zzwcy-t-all.drv'"
            " failed to build",
            "",
            "t-bad-2.1> compiling bad",
            "t-bad-2.1> bad.c:3:1: error: expected declaration",
            "t-bad-2.1> make: *** [Makefile:2: all] Error 1",
        ]
    )


def test_error_excerpt_accepts_the_progress_that_saw_the_lines() -> None:
    progress, _ = feed_all(recorded())
    assert error_excerpt(progress) == error_excerpt(recorded())


def test_error_excerpt_limit_keeps_first_errors_and_last_log_lines() -> None:
    excerpt = error_excerpt(recorded(), limit=3).split("\n")
    assert excerpt[0].startswith("error: builder for")
    assert excerpt[-1] == "t-bad-2.1> make: *** [Makefile:2: all] Error 1"
    assert len([line for line in excerpt if line]) == 3


def test_error_excerpt_without_error_message_uses_last_lines() -> None:
    lines = recorded()[:165]  # cut off mid-build, as when a build is killed
    excerpt = error_excerpt(lines, limit=2)
    assert excerpt == "t-lib-1.0> compiling lib\nt-lib-1.0> ok lib.o"
    assert error_excerpt(["plain one", "", "plain two"]) == "plain one\nplain two"


def test_helpers() -> None:
    assert strip_ansi("\x1b[31;1merror:\x1b[0m x \x1b]0;title\x07y") == "error: x y"
    assert store_path_name(BAD_DRV) == "t-bad-2.1"
    assert store_path_name("/nix/store/inqrbq4f77nmv6csvl48r089a27xqljq-t-blob") == "t-blob"
    assert store_path_name("weird") == "weird"
    # Already a name (even one with a '-' where a hash would end): unchanged.
    long_name = "linux-modules-shrunk-6.12.1-abcd-x"
    assert long_name[32] == "-" and store_path_name(long_name) == long_name
    assert store_path_name(store_path_name(BAD_DRV)) == "t-bad-2.1"


# -- robustness: no line can take a build down -----------------------------


def test_nothing_escapes_feed() -> None:
    progress = NixProgress()
    deep = "@nix " + "[" * 200_000 + "]" * 200_000
    deep_in_msg = '@nix {"action":"msg","level":0,"msg":"x","trace":' + "[" * 100_000 + "]" * 100_000 + "}"
    for line in (deep, deep_in_msg):
        # json.loads raises RecursionError here, not ValueError.
        assert [e.source for e in progress.feed(line) if isinstance(e, LogEvent)] == ["plain"]
    [event] = [e for e in progress.feed(b"\xff\xfe garbage \xc3") if isinstance(e, LogEvent)]
    assert event.text == "\ufffd\ufffd garbage \ufffd"
    [event] = [e for e in progress.feed('@nix {"action":"msg","level":0,"msg":"error: café"}'.encode())]
    assert event.error and event.text == "error: café"
    # NUL and lone surrogates are valid JSON escapes but poison UTF-8 files
    # and PostgreSQL; they become U+FFFD everywhere they could land.
    progress.feed('@nix {"action":"msg","level":0,"msg":"error: a\\u0000b\\ud800c"}')
    excerpt = error_excerpt(progress)
    assert "error: a\ufffdb\ufffdc" in excerpt
    excerpt.encode("utf-8")
    json.dumps(progress.snapshot(), ensure_ascii=False).encode("utf-8")
    huge = "@nix " + json.dumps({"action": "result", "id": 1, "type": 101, "fields": ["y" * (MAX_TEXT_CHARS * 3)]})
    progress.feed('@nix {"action":"start","id":1,"level":3,"text":"","type":105,"fields":["/nix/store/x-h.drv"]}')
    [event] = [e for e in progress.feed(huge) if isinstance(e, LogEvent)]
    assert len(event.text) < MAX_TEXT_CHARS + 100 and event.text.endswith("characters cut]")
    [event] = [e for e in progress.feed("@nix " + "z" * (MAX_JSON_CHARS + 1)) if isinstance(e, LogEvent)]
    assert event.source == "plain" and len(event.text) < MAX_TEXT_CHARS + 100


def test_feed_survives_its_own_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    progress = NixProgress()

    def broken(line: str) -> list:
        raise RecursionError("deep")

    monkeypatch.setattr(progress, "_feed", broken)
    assert [(e.source, e.text) for e in progress.feed("@nix {}")] == [("plain", "@nix {}")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_on_bytes(line: bytes) -> None:
    progress = NixProgress()
    progress.feed(line)
    progress.feed(b"@nix " + line)
    json.dumps(progress.snapshot())
    error_excerpt(progress).encode("utf-8")
