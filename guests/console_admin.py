"""The audit log of console input in the admin: read-only, newest first."""

from django.contrib import admin

from .console_models import ConsoleInput


@admin.register(ConsoleInput)
class ConsoleInputAdmin(admin.ModelAdmin):
    list_display = ["at", "username", "lab", "guest_name", "console", "refused", "text"]
    list_filter = ["refused", "console", "lab"]
    search_fields = ["username", "guest_name"]
    date_hierarchy = "at"
    fields = ("at", "username", "user", "lab", "guest", "guest_name", "console", "refused", "text")
    readonly_fields = ("at", "username", "user", "lab", "guest", "guest_name", "console", "refused", "text")

    # An audit trail: nobody edits or deletes it from here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
