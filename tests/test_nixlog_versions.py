"""builds.nixlog on Nix 2.8 to 2.31, with and without a nix-daemon.

tests/data/nixlogs/ holds the logs (its README says which are recordings of
the real Nix 2.8 and which were written from the Nix sources of a release):
both builder-failure wordings, daemon messages at level 0, final counts,
lingering top-level build activities, plain stderr text beside JSON errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builds.nixexcerpt import classify
from builds.nixlog import LogEvent, NixProgress, error_excerpt, strip_ansi

RECORDED_2_8 = Path(__file__).parent / "data" / "nix-internal-json.log"


def feed_all(lines: list[str]) -> tuple[NixProgress, list]:
    progress = NixProgress()
    events = [e for line in lines for e in progress.feed(line)]
    return progress, events


def recorded() -> list[str]:
    return RECORDED_2_8.read_text().splitlines()


NIXLOGS = Path(__file__).parent / "data" / "nixlogs"


def nixlog(name: str) -> list[str]:
    return (NIXLOGS / name).read_text(encoding="utf-8").splitlines()


def fed(name: str) -> tuple[NixProgress, list]:
    return feed_all(nixlog(name))


def error_texts(events: list) -> list[str]:
    return [strip_ansi(e.text) for e in events if isinstance(e, LogEvent) and e.error]


@pytest.mark.parametrize("name", sorted(p.name for p in NIXLOGS.glob("*.log")))
def test_every_recorded_log_reads_to_a_finished_state(name: str) -> None:
    progress, events = fed(name)
    snap = progress.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["current"] == [] and snap["builds"]["running"] == 0
    assert snap["stage"] in ("finishing", "evaluating")
    # Only lines that really are plain text come out as such.
    plain = [e.text for e in events if isinstance(e, LogEvent) and e.source == "plain"]
    assert plain == [line for line in nixlog(name) if not line.startswith("@nix ")]


def test_nix_2_29_failure_wording_names_the_derivation_and_keeps_its_tail() -> None:
    progress, _ = fed("nix-2.29-fail.log")
    assert progress.snapshot()["failed"] == ["t-bad-2.1"]
    excerpt = error_excerpt(progress).split("\n")
    assert excerpt[0].startswith("error: Cannot build '/nix/store/") and excerpt[0].endswith("-t-bad-2.1.drv'.")
    assert excerpt[1].strip() == "Reason: builder failed with exit code 2."
    assert excerpt[-3:] == [
        "t-bad-2.1> compiling bad",
        "t-bad-2.1> bad.c:3:1: error: expected declaration",
        "t-bad-2.1> make: *** [Makefile:2: all] Error 1",
    ]
    # A dependency failure is a consequence, not a failed builder.
    assert not any("t-all" in name for name in progress.snapshot()["failed"])


LIX_FAILURE = (
    '@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\\u001b[31;1merror:\\u001b[0m '
    "builder for '\\u001b[35;1m/nix/store/4q0pg5zpw5xkbhigq0skf2gm6dqbkv1c-lixy-1.0.drv\\u001b[0m' failed with exit "
    "code 1;\\n       last 2 log lines:\\n       > checking lixy\\n       > FAIL: lixy\\n       For full logs, run "
    "'\\u001b[1mnix log /nix/store/4q0pg5zpw5xkbhigq0skf2gm6dqbkv1c-lixy-1.0.drv\\u001b[0m'.\",\"raw_msg\":\"x\"}"
)


def test_log_tail_carried_by_the_message_is_used_when_no_build_line_came() -> None:
    # Lix (and Nix before 2.29) words it the old way; without -L lines, as
    # from a remote builder, only the message has the tail.
    progress, _ = feed_all([LIX_FAILURE])
    assert progress.snapshot()["failed"] == ["lixy-1.0"]
    assert error_excerpt(progress) == "\n".join(
        [
            "error: builder for '/nix/store/4q0pg5zpw5xkbhigq0skf2gm6dqbkv1c-lixy-1.0.drv' failed with exit code 1",
            "",
            "lixy-1.0> checking lixy",
            "lixy-1.0> FAIL: lixy",
        ]
    )


def test_daemon_warnings_at_level_0_are_not_errors() -> None:
    progress, events = fed("nix-2.31-daemon-fail.log")
    warnings = [e for e in events if isinstance(e, LogEvent) and "untrusted substituter" in e.text]
    assert len(warnings) == 2 and all(e.level == 0 and not e.error for e in warnings)
    errors = error_texts(events)
    assert errors[0].startswith("error: Cannot build") and not any(line.startswith("warning") for line in errors)
    excerpt = error_excerpt(progress)
    assert excerpt.startswith("error: Cannot build '/nix/store/")
    assert "untrusted substituter" not in excerpt and "man nix.conf" not in excerpt
    # The daemon's message repeats the tail the build lines already gave.
    assert excerpt.count("olddefconfig] Error 1") == 1 and "nix log" not in excerpt
    assert not any(line.lstrip().startswith(">") for line in excerpt.split("\n"))
    assert progress.snapshot()["failed"] == ["kernel-config-6.12"]


def test_real_nix_2_8_daemon_logs() -> None:
    progress, events = fed("nix-2.8-daemon-untrusted.log")
    assert error_texts(events)[0].startswith("error: builder for '/nix/store/")
    assert error_excerpt(progress).split("\n") == [
        "error: builder for '/nix/store/5n1492cmmyp84bc7bcz17kjb9fcvsss8-d-bad-3.0.drv' failed with exit code 1",
        "",
        "d-bad-3.0> compiling bad",
        "d-bad-3.0> bad.c:7:2: error: unknown type name foo",
        "d-bad-3.0> make: *** [Makefile:4: bad.o] Error 1",
    ]
    progress, events = fed("nix-2.8-daemon-verbose.log")
    linking = [e for e in events if isinstance(e, LogEvent) and e.text.startswith("linking '")]
    assert len(linking) == 3 and not any(e.error for e in linking)
    assert progress.snapshot()["error_lines"] == 5  # the one failure message, tail included
    excerpt = error_excerpt(progress)
    assert excerpt.startswith("error: builder for") and "linking" not in excerpt and "retrying" not in excerpt
    assert "warning: unable to download 'https://cache.nixos.org/nix-cache-info'" in excerpt
    assert excerpt.endswith("d-check> FAIL: README is not a manual")


def test_final_counts_keep_what_was_expected() -> None:
    progress, _ = fed("nix-2.28-parallel-fail.log")
    assert progress.snapshot()["builds"] == {"done": 0, "expected": 2, "running": 0, "failed": 1}
    assert progress.snapshot()["failed"] == ["t-bad-1.2"]
    # The issue's own sequence, as bare lines.
    lines = [
        '{"action":"start","id":7,"level":0,"parent":0,"text":"","type":104}',
        '{"action":"result","fields":[0,2,1,1],"id":7,"type":105}',
        '{"action":"stop","id":7}',
    ]
    progress, _ = feed_all(["@nix " + line for line in lines])
    assert progress.snapshot()["builds"] == {"done": 0, "expected": 2, "running": 0, "failed": 1}


@pytest.mark.parametrize(("name", "last"), [("nix-2.8-multi.log", "m-c-1.0"), ("nix-2.18-multi.log", "guest-image-0.4")])
def test_running_list_matches_nix_running_count_with_several_installables(name: str, last: str) -> None:
    progress = NixProgress()
    builds_id = None
    checked = 0
    for line in nixlog(name):
        progress.feed(line)
        obj = json.loads(line[len("@nix ") :])
        if obj.get("type") == 104 and obj["action"] == "start":
            builds_id = obj["id"]
        snap = progress.snapshot()
        if obj["action"] == "result" and obj["id"] == builds_id:
            assert len(snap["current"]) == snap["builds"]["running"] == obj["fields"][2]
            checked += 1
        if '"running tests"' in line:
            # The first two are built, but as top-level goals they keep
            # their build activities until nix ends.
            assert snap["current"] == [last] and snap["phase"] == "buildPhase"
            assert snap["stage"] == "building"
    assert checked >= 6


def test_plain_stderr_lines_join_the_json_error() -> None:
    progress, _ = fed("nix-2.18-ssh-store.log")
    assert error_excerpt(progress) == "\n".join(
        [
            "error: failed to start SSH connection to 'builder.lab.example'",
            "",
            "warning: unknown setting 'build-cores-per-vm'",  # once, though printed as text and as JSON
            "ssh: connect to host builder.lab.example port 22: Connection timed out",
        ]
    )
    progress, _ = fed("nix-2.8-remote-builder.log")
    excerpt = error_excerpt(progress).split("\n")
    assert excerpt[0] == "error: unable to start any build; remote machines may not have all required system features."
    assert any(line.endswith("ssh: connect to host 192.0.2.7 port 22: No route to host") for line in excerpt)
    assert progress.snapshot()["error_lines"] == 2  # "cannot build on ..." is context, not the error


def test_context_lines_yield_to_errors_and_tails_when_short_of_room() -> None:
    lines = [f"warning: noise {i}" for i in range(30)] + recorded()
    excerpt = error_excerpt(lines, limit=10).split("\n")
    assert excerpt[0].startswith("error: builder for")
    assert excerpt[-1] == "t-bad-2.1> make: *** [Makefile:2: all] Error 1"
    assert [line for line in excerpt if line.startswith("warning")] == [f"warning: noise {i}" for i in range(25, 30)]
    assert len([line for line in excerpt if line]) == 10


@pytest.mark.parametrize(
    ("level", "text", "structured", "kind"),
    [
        (0, "\x1b[31;1merror:\x1b[0m boom", True, "error"),
        (0, "error: forwarded from a daemon", False, "error"),
        (0, "\x1b[35;1mwarning:\x1b[0m \x1b[31;1merror:\x1b[0m unable to download 'x': HTTP 404", False, "warning"),
        (0, "warning: ignoring untrusted substituter 'https://c', you are not a trusted user.", False, "chatter"),
        (0, "linking '/nix/store/a-x/f' to '/nix/store/.links/0abc'", False, "chatter"),
        (0, "warning: ignoring the client-specified setting 'sandbox', because it is a restricted", False, "warning"),
        (0, "\x1b[35;1mwarning:\x1b[0m error: unable to download 'u': timeout; retrying in 251 ms", False, "chatter"),
        (0, "(use '--show-trace' to show detailed location information)", False, "chatter"),
        (0, "cannot build on 'ssh://b': error: cannot connect to 'b'", False, "note"),
        (0, "error (ignored): no space left", False, "warning"),
        (1, "Failed to find a machine for remote build!", False, "warning"),
        (1, "\x1b[35;1mevaluation warning:\x1b[0m deprecated", False, "warning"),
        (3, "error: only said at info level", False, "info"),
        (None, "fatal: could not read Username for 'https://github.com'", False, "note"),
    ],
)
def test_message_classification(level: int | None, text: str, structured: bool, kind: str) -> None:
    assert classify(level, text, structured) == kind
