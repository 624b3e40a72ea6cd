"""The audit log of console input: who typed what into which guest, when.

Written by the console websocket (guests/console_consumer.py) in batches
(one row per user, console and second at most), read by admins in the
Django admin. Imported at the end of guests/models.py.
"""

from django.conf import settings as conf
from django.db import models

from .vm_models import Guest

CONSOLES = (("ttyS0", "serial line (ttyS0)"), ("hvc0", "virtio console (hvc0)"))


class ConsoleInput(models.Model):
    # A guest deleted later keeps its audit trail (guest_name says which it was).
    guest = models.ForeignKey(Guest, models.SET_NULL, null=True, related_name="console_inputs")
    guest_name = models.CharField(max_length=63)
    lab = models.ForeignKey("guests.Lab", models.CASCADE, related_name="console_inputs")
    user = models.ForeignKey(conf.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    username = models.CharField(max_length=150)
    console = models.CharField(max_length=8, choices=CONSOLES)
    at = models.DateTimeField(db_index=True, help_text="when the first of these bytes was typed")
    data = models.BinaryField(help_text="the bytes sent to the guest, as typed (query replies removed)")
    refused = models.BooleanField(default=False, help_text="typed by someone without the right: not sent")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.username} → {self.guest_name}/{self.console} at {self.at:%Y-%m-%d %H:%M:%S}"

    @property
    def text(self) -> str:
        """The bytes for reading: printable as is, the rest escaped (\\r, \\x1b...)."""
        return bytes(self.data).decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")
