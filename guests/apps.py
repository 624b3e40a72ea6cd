from django.apps import AppConfig


class GuestsConfig(AppConfig):
    name = "guests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from .eval_jobs import on_revision_saved
        from .models import Revision

        # Every new revision gets evaluated, whichever service created it.
        post_save.connect(on_revision_saved, sender=Revision, dispatch_uid="guests.evaluate-on-save")
