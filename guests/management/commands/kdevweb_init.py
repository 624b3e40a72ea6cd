"""First-run set-up: an admin account and a demo lab, each created once.

The admin password is generated, printed once and stored 0600 in the data
dir — never a fixed default. The demo configuration uses the offline
nixos-flake stand-in in examples/, so a newcomer can build without network.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from guests import flake, services
from guests.models import Lab

STANDIN = Path(settings.BASE_DIR) / "examples" / "nixos-flake-standin"


def demo_settings() -> dict:
    return flake.default_settings(
        nixos_flake_url=f"path:{STANDIN}", hostName="demo", profiles=["devel"], testSuites=["fstests"],
        extraPackages=[["fio"], ["gdb"]],
    )


class Command(BaseCommand):
    help = "Create the first admin account and a demo lab (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        User = get_user_model()
        pw_file = Path(settings.DATA_DIR) / "admin-password"
        admin = User.objects.filter(username=username).first()
        if admin is None:
            password = secrets.token_urlsafe(15)
            admin = User.objects.create_superuser(username, password=password)
            Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            self.stdout.write(f"Created admin account “{username}” with password: {password}")
            self.stdout.write(f"(shown once; also stored, readable only by you, in {pw_file} "
                              "until the first login with it)")
        else:
            where = f"is in {pw_file}" if pw_file.exists() else "was removed after the first login with it"
            self.stdout.write(f"Admin account “{username}” exists; its first password {where}.")
        if not Lab.objects.exists():
            lab = services.lab_create(name="Demo lab", slug="demo", user=admin)
            services.configuration_create(
                lab=lab, name="example-guest", settings=demo_settings(),
                message="demo guest on the offline nixos-flake stand-in", user=admin,
            )
            self.stdout.write("Created the demo lab with configuration “example-guest”.")
