"""Run the console relays of one host's guests (guests/runtime/relay.py).

``manage.py consolerelay --host NAME`` keeps a relay on each console
(ttyS0 and hvc0) of every guest of that host, following guests as they
are created and deleted (re-read every few seconds). ``--guest ID`` runs
only that guest's. It runs beside the host agent on the same machine, as a
process of its own: a host agent restart (or kill -9) does not interrupt
the consoles, and a relay restart loses nothing (it resumes from QEMU's
``logfile=``).
"""

import asyncio
import logging
import os
import signal
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from guests.console import console_specs, transcript_dir
from guests.runtime.relay import redis_client
from guests.runtime.relaypool import RelayPool
from guests.runtime.transcript_removal import sweep
from guests.vm_models import Guest, Host

RESCAN = 3.0

log = logging.getLogger("kdevweb.consolerelay")


class Command(BaseCommand):
    help = "Relay the guest consoles of one host to Redis and keep their transcripts; runs until SIGTERM."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--host", help="the Host's name: every guest on it")
        group.add_argument("--guest", type=int, help="one guest's id")
        parser.add_argument("--keep-days", type=float,
                            default=float(os.environ.get("KDEVWEB_TRANSCRIPT_DAYS", "90")),
                            help="delete a console's boot transcripts this many days after the boot ended "
                                 "(0: keep them forever; default $KDEVWEB_TRANSCRIPT_DAYS or 90)")

    def handle(self, *args, host=None, guest=None, keep_days=90.0, **options):
        if guest is not None:
            row = Guest.objects.select_related("host").filter(pk=guest).first()
            if row is None:
                raise CommandError(f"no guest with id {guest}")
            host_row, ids = row.host, [guest]
        else:
            host_row = Host.objects.filter(name=host).first()
            while host_row is None:
                # Started beside the host agent, which may create the host row first.
                self.stderr.write(f"no host named {host!r} yet; waiting for it")
                time.sleep(RESCAN)
                close_old_connections()
                host_row = Host.objects.filter(name=host).first()
            ids = None
            # Guests deleted "with their transcripts" while no relay ran: no relay of theirs runs now.
            sweep(transcript_dir(host_row, 0, "ttyS0").parent.parent,
                  keep=set(Guest.objects.filter(host=host_row).values_list("pk", flat=True)))
        asyncio.run(self._run(host_row, ids, keep_days * 86400 if keep_days > 0 else None))

    async def _run(self, host: Host, ids: list[int] | None, keep_seconds: float | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pool = RelayPool(redis_client(settings.REDIS_URL, settings.REDIS_PASSWORD), keep_seconds=keep_seconds)

        def wanted():
            close_old_connections()
            return console_specs(host, ids)

        try:
            while not stop.is_set():
                try:
                    await pool.sync(await sync_to_async(wanted, thread_sensitive=False)())
                except Exception:  # noqa: BLE001 - database away: keep the relays we have
                    log.exception("could not read this host's guests; keeping the current relays")
                waiter = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter}, timeout=RESCAN)
                waiter.cancel()
        finally:
            await pool.close()
