"""Hosts, kernels and guests: what the host agent runs and the pages show.

A guest row is the record of one imageless VM; the host agent
(``manage.py hostagent``) is the only writer of what it saw (state after
start, pids, exit status), the web tier is the only writer of what users
asked for (``pending_action``/``request_id``). The state values are the
runtime state machine's (guests.runtime.state.State).

Imported at the end of guests/models.py so Django finds the models.
"""

from pathlib import Path

from django.conf import settings as conf
from django.db import models

from guests.runtime.state import State

from .models import Configuration, Lab


class Host(models.Model):
    name = models.SlugField(max_length=50, unique=True)
    run_dir = models.CharField(max_length=200, help_text="where the agent keeps guests' sockets, logs and disks")
    queue = models.CharField(max_length=100, blank=True,
                             help_text="Redis list the agent reads requests from (default: from the name)")
    memory_budget_mib = models.PositiveIntegerField(default=8192)
    # Comma-free absolute paths, one per line: the directories under which
    # users may pick share directories.
    share_roots = models.TextField(blank=True)
    libvirt_uri = models.CharField(max_length=200, blank=True, help_text="for libvirt guests (later)")
    accel = models.CharField(max_length=4, blank=True, help_text="kvm or tcg: the last probe's result")
    accel_reason = models.CharField(max_length=400, blank=True)
    accel_probed = models.DateTimeField(null=True, blank=True)
    agent_seen = models.DateTimeField(null=True, blank=True, help_text="the agent's last heartbeat")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def request_queue(self) -> str:
        return self.queue or f"kdevweb:hostagent:{self.name}"

    @property
    def roots(self) -> list[str]:
        return [line.strip() for line in self.share_roots.splitlines() if line.strip()]

    def guest_run_dir(self, guest_id: int) -> Path:
        return Path(self.run_dir) / f"guest-{guest_id}"

    def guest_disk_dir(self, guest_id: int) -> Path:
        # Beside, not inside, the run dir: deleting a guest's processes and
        # sockets must not take the user's data with it.
        return Path(self.run_dir) / "disks" / f"guest-{guest_id}"


class Kernel(models.Model):
    host = models.ForeignKey(Host, models.CASCADE, related_name="kernels")
    name = models.CharField(max_length=100)
    image = models.CharField(max_length=400, help_text="bzImage or vmlinux")
    modules_dir = models.CharField(max_length=400, help_text="…/lib/modules/<version>")
    version = models.CharField(max_length=100)
    is_default = models.BooleanField(default=False)
    added_by = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    added = models.DateTimeField(auto_now_add=True)
    # {option: "module"|"missing"|"unknown"} the real imageless initrd needs built in; {} = can boot one.
    imageless_missing = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="unique_kernel_name_per_host")]
        ordering = ["host__name", "-is_default", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.version})"

    @property
    def boots_real_guest(self) -> bool:
        return not self.imageless_missing


class Action(models.TextChoices):
    START = "start"
    STOP = "stop"
    FORCE_OFF = "force_off"
    REBOOT = "reboot"
    DELETE = "delete"


STATE_CHOICES = [(s.value, s.value) for s in State]
ACTIVE_STATES = frozenset(s.value for s in State if s.active)


class Guest(models.Model):
    lab = models.ForeignKey(Lab, models.CASCADE, related_name="guests")
    name = models.CharField(max_length=63)
    configuration = models.ForeignKey(Configuration, models.PROTECT, related_name="guests")
    build = models.ForeignKey("builds.Build", models.PROTECT, related_name="guests")
    host = models.ForeignKey(Host, models.PROTECT, related_name="guests")
    kernel = models.ForeignKey(Kernel, models.PROTECT, related_name="guests")
    extra_cmdline = models.CharField(max_length=2047, blank=True)
    memory_mib = models.PositiveIntegerField(default=1024)
    vcpus = models.PositiveSmallIntegerField(default=2)
    state = models.CharField(max_length=10, choices=STATE_CHOICES, default=State.DEFINED.value, db_index=True)
    stopping_expected = models.BooleanField(default=False)
    accel = models.CharField(max_length=4, blank=True)
    # What a user asked for and the agent has not done yet; the Redis
    # message only wakes the agent, this row says what to do, so a lost
    # message (Redis restart) loses no request.
    pending_action = models.CharField(max_length=10, choices=Action.choices, blank=True)
    request_id = models.CharField(max_length=40, blank=True)
    delete_disks = models.BooleanField(default=False)
    # Asked with the delete: the console relay removes the transcripts once
    # its relay of the guest stopped (guests/runtime/transcript_removal.py).
    delete_transcripts = models.BooleanField(default=False)
    # Roll back and restart: the host agent starts the guest again once it
    # has stopped (guests.guest_services.guest_restart_after_stop).
    start_after_stop = models.BooleanField(default=False)
    stop_deadline = models.DateTimeField(null=True, blank=True, help_text="force off after this if still stopping")
    # For re-adoption the agent reads the pid files in the run dir; these are for the page.
    qemu_pid = models.IntegerField(null=True, blank=True)
    ssh_port = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    started_by = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    started = models.DateTimeField(null=True, blank=True, help_text="QEMU came up (running)")
    start_requested = models.DateTimeField(null=True, blank=True)
    stopped = models.DateTimeField(null=True, blank=True)
    exit_status = models.IntegerField(null=True, blank=True, help_text="Popen-style: negative = signal")
    exit_text = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    stderr_tail = models.TextField(blank=True)
    serial_tail = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lab", "name"], name="unique_guest_name_per_lab")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class GuestDisk(models.Model):
    guest = models.ForeignKey(Guest, models.CASCADE, related_name="disks")
    mount_point = models.CharField(max_length=200)
    device = models.CharField(max_length=200, blank=True, help_text="the configuration's device for it")
    size_mib = models.PositiveIntegerField()
    path = models.CharField(max_length=400)
    serial = models.CharField(max_length=20)

    class Meta:
        ordering = ["mount_point"]
        constraints = [models.UniqueConstraint(fields=["guest", "serial"], name="unique_disk_serial_per_guest")]


class GuestShare(models.Model):
    guest = models.ForeignKey(Guest, models.CASCADE, related_name="shares")
    tag = models.CharField(max_length=36)
    mount_point = models.CharField(max_length=200, blank=True)
    host_path = models.CharField(max_length=400)
    read_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["tag"]
        constraints = [models.UniqueConstraint(fields=["guest", "tag"], name="unique_share_tag_per_guest")]


class GuestEvent(models.Model):
    guest = models.ForeignKey(Guest, models.CASCADE, related_name="events")
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    # "user" for what someone asked, "agent" for what the host agent saw.
    source = models.CharField(max_length=10, default="user")
    kind = models.CharField(max_length=20)
    state = models.CharField(max_length=10, blank=True)
    text = models.TextField(blank=True)

    class Meta:
        ordering = ["-time", "-id"]
