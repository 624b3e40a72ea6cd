"""Run the host agent for one host (as root): see guests/hostagent.py."""

import signal

from django.core.management.base import BaseCommand, CommandError

from guests.hostagent import AgentRunning, HostAgent
from guests.vm_models import Host


class Command(BaseCommand):
    help = "Own, watch and re-adopt this host's guests (QEMU, virtiofsd); runs until SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--host", required=True, help="the Host's name")
        parser.add_argument("--stop-timeout", type=float, default=60.0,
                            help="seconds an ACPI shutdown may take before the guest is forced off")
        parser.add_argument("--no-probe", action="store_true", help="skip the KVM probe (use the stored result)")
        parser.add_argument("--share-root", action="append", dest="share_roots", metavar="DIR",
                            help="allow shares only under DIR (repeatable) as well as under the host's roots "
                                 "in the database, which the unprivileged web tier can change")

    def handle(self, *args, host, stop_timeout, no_probe, share_roots, **options):
        if not Host.objects.filter(name=host).exists():
            raise CommandError(f"no host named {host!r} (manage.py hostinit creates the default one)")
        agent = HostAgent(host, stop_timeout=stop_timeout, probe=not no_probe, share_roots=share_roots)
        # Like healthchecks' sendalerts: finish the current step, then exit;
        # guests keep running for the next agent to adopt.
        signal.signal(signal.SIGTERM, agent.request_stop)
        signal.signal(signal.SIGINT, agent.request_stop)
        try:
            agent.run()
        except AgentRunning as exc:
            raise CommandError(str(exc)) from None
