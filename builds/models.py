"""A Build row mirrors one RQ job that runs `nix build` on a revision.

The row, not RQ, is the record: the job writes status, progress and paths
into it as it goes, so the outcome survives Redis restarts and worker deaths
(a reaper turns builds whose worker stopped heartbeating into `lost`).
The log lives on disk under BUILDS_DIR/<id>/, compressed once finished.
"""

from pathlib import Path

from django.conf import settings
from django.db import models

from guests.models import Lab, Revision


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    LOST = "lost", "Lost"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.LOST})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


class Build(models.Model):
    lab = models.ForeignKey(Lab, models.CASCADE, related_name="builds")
    revision = models.ForeignKey(Revision, models.PROTECT, related_name="builds")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    retry_of = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="retries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    attr = models.CharField(max_length=40, help_text="packages.x86_64-linux attribute built")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True, help_text="a worker claimed it")
    nix_started = models.DateTimeField(null=True, blank=True, help_text="the nix process was spawned")
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="error excerpt of a failed build")
    progress = models.JSONField(default=dict, blank=True)
    log_lines = models.PositiveIntegerField(default=0)
    drv_path = models.CharField(max_length=300, blank=True)
    out_path = models.CharField(max_length=300, blank=True)
    closure_size = models.BigIntegerField(null=True, blank=True)
    bootspec = models.JSONField(null=True, blank=True)
    flake_lock = models.TextField(blank=True, help_text="the flake.lock nix wrote: exact input revisions used")

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["lab", "-created", "-id"], name="build_lab_recent"),
            models.Index(fields=["lab", "status", "-created"], name="build_lab_status"),
        ]

    def __str__(self) -> str:
        return f"build #{self.pk} of {self.revision}"

    @property
    def job_id(self) -> str:
        return f"build-{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration(self):
        if self.started and self.finished:
            return self.finished - self.started
        return None

    @property
    def workdir(self) -> Path:
        return Path(settings.BUILDS_DIR) / str(self.pk)
