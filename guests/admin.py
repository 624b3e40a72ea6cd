from django.contrib import admin

from .models import Configuration, Lab, Membership, Revision


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["lab", "user", "role"]
    list_filter = ["role", "lab"]


@admin.register(Configuration)
class ConfigurationAdmin(admin.ModelAdmin):
    list_display = ["name", "lab", "created_by", "created"]
    list_filter = ["lab"]


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
