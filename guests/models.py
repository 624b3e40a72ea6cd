"""Labs (teams), their members' roles, and guest configurations.

A configuration is only a name; what it *is* lives in its revisions, which
are immutable: every save adds one, and the rendered files are stored with
it so a revision renders the same flake forever, even if the renderer changes.
"""

from django.conf import settings as conf
from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


# Each role can do everything the roles before it can.
ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class Lab(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(conf.AUTH_USER_MODEL, through="Membership", related_name="labs")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    lab = models.ForeignKey(Lab, models.CASCADE, related_name="memberships")
    user = models.ForeignKey(conf.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lab", "user"], name="one_membership_per_user")]
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.lab} ({self.role})"


class Configuration(models.Model):
    lab = models.ForeignKey(Lab, models.CASCADE, related_name="configurations")
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    cloned_from = models.ForeignKey("Revision", models.SET_NULL, null=True, blank=True, related_name="clones")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lab", "name"], name="unique_config_name_per_lab")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def latest(self) -> "Revision | None":
        return self.revisions.order_by("-number").first()


class EvalStatus(models.TextChoices):
    NONE = "", "not evaluated"  # revisions saved before evaluate-on-save existed
    PENDING = "pending", "evaluating"
    OK = "ok", "evaluates"
    ERROR = "error", "does not evaluate"


class Revision(models.Model):
    configuration = models.ForeignKey(Configuration, models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    settings = models.JSONField()
    extra_module = models.TextField(blank=True)
    files = models.JSONField()
    message = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    # What `nix eval` said about the rendered files, filled in by the
    # evaluate job after the save (guests.eval_jobs). The only fields ever
    # written after creation, with an UPDATE: the revision itself stays as saved.
    eval_status = models.CharField(max_length=8, choices=EvalStatus.choices, default=EvalStatus.PENDING, blank=True)
    eval_error = models.TextField(blank=True)
    eval_drv_path = models.CharField(max_length=300, blank=True)
    eval_finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["configuration", "number"], name="unique_revision_number")
        ]
        ordering = ["configuration", "-number"]

    def __str__(self) -> str:
        return f"{self.configuration} r{self.number}"

    def save(self, *args, **kwargs):
        # Immutable: a revision is written once. Changes are new revisions.
        if self.pk is not None:
            raise ValueError("revisions are immutable; create a new one instead")
        super().save(*args, **kwargs)

    @property
    def backend(self) -> str:
        return self.settings["backend"]


# Hosts, kernels and guests live in their own module (a reader looking for
# the VM records finds them there); imported here so Django registers them.
from .vm_models import (  # noqa: E402,F401
    Guest, GuestDisk, GuestEvent, GuestShare, Host, Kernel,
)
from .console_models import ConsoleInput  # noqa: E402,F401
