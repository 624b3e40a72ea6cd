"""Admin for hosts, kernels and guests (imported by guests/admin.py).

Hosts are configured here (memory budget, allowed share roots). Guests and
their events are shown read-only: their state is the host agent's to
write, and deleting a row here would orphan its processes and run dir
(the guest page's Delete goes through the agent).
"""

from django.contrib import admin
from django.db.models import Model

from .vm_models import Guest, GuestDisk, GuestEvent, GuestShare, Host, Kernel


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "run_dir", "memory_budget_mib", "accel", "accel_probed", "agent_seen"]
    readonly_fields = ["accel", "accel_reason", "accel_probed", "agent_seen"]


@admin.register(Kernel)
class KernelAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "version", "is_default", "added_by", "added"]
    list_filter = ["host"]
    readonly_fields = ["version", "imageless_missing", "added_by"]


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DiskInline(admin.TabularInline):
    model: type[Model] = GuestDisk
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ShareInline(DiskInline):
    model = GuestShare


@admin.register(Guest)
class GuestAdmin(ReadOnly):
    list_display = ["name", "lab", "host", "state", "build", "started_by", "started"]
    list_filter = ["state", "host", "lab"]
    inlines = [DiskInline, ShareInline]


@admin.register(GuestEvent)
class GuestEventAdmin(ReadOnly):
    list_display = ["time", "guest", "source", "kind", "state", "user"]
    list_filter = ["source", "kind"]


@admin.register(GuestDisk)
class GuestDiskAdmin(ReadOnly):
    list_display = ["guest", "mount_point", "serial", "size_mib"]


@admin.register(GuestShare)
class GuestShareAdmin(ReadOnly):
    list_display = ["guest", "tag", "host_path", "read_only"]
