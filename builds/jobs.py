"""The RQ job that runs one build: render, `nix build`, record.

Everything the page shows comes from here: log lines go to the log file
first and then to the build's offset stream (with their byte offsets;
builds/stream.py), progress goes to the stream often and to the row every
few seconds, and the outcome goes to the row once, through
`services.build_finish`.
"""

import logging
import os
import shutil
import socket
import threading
import time
import traceback

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection
from django.utils import timezone

from guests.flake import write_files
from guests.validators import validate_source_location

from . import logstore, nixcmd, nixlog
from .models import Build, Status
from .scheduling import build_claim
from .services import build_finish, build_wake
from .stream import BuildPublisher, publish_status

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0  # seconds between heartbeats written to the row
POLL_EVERY = 0.5  # seconds between checks for a cancel request
PROGRESS_EVERY = 0.2  # seconds between progress messages to the browser


def build_run(build_id: int) -> str:
    """RQ entry point: run the fairest eligible queued build (``build_id``
    only says which start enqueued this token; builds/scheduling.py).
    Returns the final status (RQ keeps it as the result)."""
    close_old_connections()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    build = build_claim(worker=worker)
    if build is None:
        return "skipped: nothing eligible"  # cancelled, or every waiting lab at its limit
    return BuildRunner(build).run()


def _format(event: nixlog.LogEvent) -> str:
    if event.source == "build" and event.drv:
        return f"\x1b[36m{event.drv}>\x1b[0m {event.text}"
    return event.text


class BuildRunner:
    def __init__(self, build: Build) -> None:
        self.build = build
        self.workdir = build.workdir
        self.progress = nixlog.NixProgress()
        self.proc = None
        self.cancelled = False
        self.stopping = threading.Event()
        self.last_progress = 0.0
        self.emit_lock = threading.Lock()

    # -- output --------------------------------------------------------------

    def emit(self, lines: list[str]) -> None:
        # The reading thread and the watchdog both emit: the offset a batch
        # is published with must be the one it was written at.
        with self.emit_lock:
            offset, data = self.writer.append(lines)
            self.publisher.output(offset, data)

    def on_line(self, line: str) -> None:
        self.raw.write(line + "\n")  # nix's own stream, kept for re-parsing
        out: list[str] = []
        for event in self.progress.feed(line):
            if isinstance(event, nixlog.LogEvent):
                out += logstore.split_text(_format(event))
        if out:
            self.emit(out)
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            self.publisher.progress(self.progress.snapshot())

    # -- watchdog: heartbeat and cancellation ---------------------------------

    def watchdog(self) -> None:
        last_beat = 0.0
        try:
            while not self.stopping.wait(POLL_EVERY):
                # Only an explicit cancel stops nix: a build the reaper wrongly
                # gave up on keeps going and records its real outcome.
                wanted = Build.objects.filter(pk=self.build.pk, cancel_requested=True).exists()
                if wanted and not self.cancelled:
                    self.cancelled = True
                    self.emit(["kdevweb: cancel requested, stopping nix"])
                    if self.proc is not None:
                        nixcmd.kill_group(self.proc, grace=3.0)
                if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                    last_beat = time.monotonic()
                    Build.objects.filter(pk=self.build.pk).update(
                        heartbeat=timezone.now(), progress=self.progress.snapshot(), log_lines=self.writer.count
                    )
        except Exception:  # never let the watchdog take the build down
            log.exception("watchdog of build %s", self.build.pk)
        finally:
            connection.close()

    # -- the build --------------------------------------------------------------

    def run(self) -> str:
        # A leftover dir (build ids reused after a database reset) would mix
        # an old log and flake.lock into this build: start clean.
        shutil.rmtree(self.workdir, ignore_errors=True)
        flake_dir = self.workdir / "flake"
        flake_dir.mkdir(parents=True)
        write_files(self.build.revision.files, str(flake_dir))
        self.writer = logstore.LogWriter(self.workdir)
        self.raw = open(self.workdir / logstore.RAW, "w", encoding="utf-8", errors="replace")
        self.publisher = BuildPublisher(self.build.pk, self.workdir)
        self.publisher.status()  # queued -> running
        watchdog = threading.Thread(target=self.watchdog, name=f"watchdog-{self.build.pk}", daemon=True)
        watchdog.start()
        started = time.monotonic()
        try:
            fields = self.build_and_inspect(flake_dir)
            status = fields.pop("status")
            lock = flake_dir / "flake.lock"
            if lock.exists():
                fields["flake_lock"] = lock.read_text(errors="replace")
                lock.chmod(0o600)  # nix sets its own umask (022); the data dir is private
            self.emit([f"kdevweb: {status} after {time.monotonic() - started:.1f} s"])
        except Exception:  # e.g. a full disk while writing the log
            status, fields = Status.FAILED, {"error": "kdevweb failed to record the build:\n" + traceback.format_exc()}
        finally:
            # Recorded while the watchdog still heartbeats, so the reaper
            # never mistakes a slow finish for a dead worker.
            build_finish(build_id=self.build.pk, status=status, progress=self.progress.snapshot(),
                         log_lines=self.writer.count, from_lost=True, wake=False, **fields)
            self.stopping.set()
            watchdog.join(5)
            self.publisher.close()
            self.writer.close()
            self.raw.close()
        # Readers handle the switch from `log` to `log.gz` at any moment.
        logstore.compress(self.workdir)
        logstore.compress(self.workdir, logstore.RAW)
        build_wake()  # this lab's slot is free: a token for whatever waits
        if status == Status.SUCCEEDED and fields.get("out_path"):
            self.measure(fields["out_path"])
        return status

    def refused_sources(self) -> list[str]:
        """Sources outside what settings allow now (a revision saved before a
        rule or an ALLOWED_SOURCE_ROOTS change): nix must not fetch them."""
        settings_ = self.build.revision.settings or {}
        urls = [settings_.get("nixosFlakeUrl") or ""]
        for value in (settings_.get("sourceOverrides") or {}).values():
            urls.append(value.get("url", "") if isinstance(value, dict) else str(value))
        refused = []
        for url in filter(None, urls):
            try:
                validate_source_location(url)
            except ValidationError as exc:
                refused += exc.messages
        return refused

    def build_and_inspect(self, flake_dir) -> dict:
        refused = self.refused_sources()
        if refused:
            self.emit(["kdevweb: not building: " + m for m in refused])
            return {"status": Status.FAILED, "error": "Not built: " + " ".join(refused)}
        argv = nixcmd.build_argv(
            flake_dir=str(flake_dir), attr=self.build.attr, out_link=str(self.workdir / "result"),
            offline=settings.NIX_OFFLINE,
        )
        self.emit([f"kdevweb: building {self.build.revision} ({self.build.attr})", "$ " + " ".join(argv)])
        try:
            code, stdout = nixcmd.run_build(
                argv, cwd=str(flake_dir), on_line=self.on_line, env=nixcmd.nix_env(remote=settings.NIX_REMOTE),
                on_start=self._started, timeout=settings.BUILD_TIMEOUT,
            )
            return self.outcome(code, stdout)
        except nixcmd.BuildTimeout as exc:
            return {"status": Status.FAILED, "exit_code": exc.returncode,
                    "error": f"Timed out after {settings.BUILD_TIMEOUT} s (BUILD_TIMEOUT); nix was killed."}
        except Exception:
            return {"status": Status.FAILED, "error": "kdevweb failed to run the build:\n" + traceback.format_exc()}

    def measure(self, out_path: str) -> None:
        """Closure size, after the result is out: review data, not the result."""
        try:
            size = nixcmd.path_info_size(out_path, env=nixcmd.nix_env(remote=settings.NIX_REMOTE))
        except nixcmd.NixError as exc:
            log.warning("closure size of build %s: %s", self.build.pk, exc)
            return
        Build.objects.filter(pk=self.build.pk).update(closure_size=size)
        publish_status(self.build.pk)

    def _started(self, proc) -> None:
        self.proc = proc
        Build.objects.filter(pk=self.build.pk).update(nix_started=timezone.now())
        if self.cancelled:  # cancel arrived while nix was starting
            nixcmd.kill_group(proc, grace=3.0)

    def outcome(self, code: int, stdout: str) -> dict:
        if self.cancelled:
            return {"status": Status.CANCELLED, "exit_code": code}
        if code != 0:
            excerpt = nixlog.error_excerpt(self.progress)
            return {"status": Status.FAILED, "exit_code": code, "error": excerpt or f"nix exited {code}"}
        results = nixcmd.parse_build_json(stdout)
        fields = {"status": Status.SUCCEEDED, "exit_code": 0}
        if results:
            fields["drv_path"] = results[0]["drv_path"]
            fields["out_path"] = next(iter(results[0]["outputs"].values()), "")
        if fields.get("out_path"):
            try:
                fields["bootspec"] = nixcmd.read_bootspec(str(fields["out_path"]))
            except ValueError as exc:
                self.emit([f"kdevweb: boot.json is malformed: {exc}"])
        return fields
