from django.contrib import admin, messages

from . import services
from .models import Build


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    """Read-only: a build's row is the record of what ran. Only its job
    writes status, paths and times; an admin who could add or edit rows
    could falsify history. Deleting goes through the same service as the
    app (finished builds only, log and GC root go with the row)."""

    list_display = ["id", "lab", "revision", "status", "created_by", "created", "finished"]
    list_filter = ["status", "lab"]
    raw_id_fields = ["revision", "retry_of"]
    actions = ["delete_finished"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not obj.is_terminal:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's bulk delete bypasses the service (and would take running builds).
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request, obj):
        services.build_delete(build=obj)

    def delete_queryset(self, request, queryset):
        for build in queryset:
            self.delete_model(request, build)

    @admin.action(description="Delete selected finished builds (with log and GC root)",
                  permissions=["delete"])
    def delete_finished(self, request, queryset):
        deleted, refused = 0, []
        for build in queryset:
            try:
                services.build_delete(build=build)
                deleted += 1
            except ValueError as exc:
                refused.append(f"#{build.pk}: {exc}")
        if deleted:
            self.message_user(request, f"Deleted {deleted} build(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)
