from django.contrib import admin

from .models import Build


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["id", "lab", "revision", "status", "created_by", "created", "finished"]
    list_filter = ["status", "lab"]
    raw_id_fields = ["revision", "retry_of"]
