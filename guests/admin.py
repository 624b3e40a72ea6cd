from django.contrib import admin

from .models import Configuration, Lab, Membership, Revision


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    inlines = [MembershipInline]

    # Deleting a lab would cascade through its builds (running ones too)
    # behind the app's back; the app has no lab deletion.
    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["lab", "user", "role"]
    list_filter = ["role", "lab"]


@admin.register(Configuration)
class ConfigurationAdmin(admin.ModelAdmin):
    list_display = ["name", "lab", "created_by", "created"]
    list_filter = ["lab"]

    # Its builds stay in its lab: moving it would split its history.
    def get_readonly_fields(self, request, obj=None):
        return ["lab", "cloned_from"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False  # revisions and builds are history; the app deletes none


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["configuration", "number", "created_by", "created", "message"]
    list_filter = ["configuration__lab"]
    # Revisions are immutable and the app never deletes one on its own
    # (builds point at them): the admin may look, not touch.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


from . import vm_admin  # noqa: E402,F401  (hosts, kernels, guests)
from . import console_admin  # noqa: E402,F401  (the audit log of console input)
