"""Mark builds whose worker died as `lost`.

A separate process on purpose: when a worker is killed (-9, OOM, reboot) it
cannot report its own death, and a reaper inside it would die with it.
"""

import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from builds.services import builds_reap


class Command(BaseCommand):
    help = "Reap lost builds every few seconds (or once with --once)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")
        parser.add_argument("--interval", type=float, default=5.0)

    def handle(self, *args, once, interval, **options):
        while True:
            # Resident: a connection the database dropped (restart, failover)
            # stays broken until closed; Django checks only around requests.
            close_old_connections()
            try:
                reaped = builds_reap()
                if reaped:
                    self.stdout.write(f"lost: {reaped}")
            except Exception as exc:  # Redis or DB hiccup: try again next round
                self.stderr.write(f"reaper: {exc}")
            if once:
                return
            time.sleep(interval)
