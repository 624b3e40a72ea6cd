"""Register this machine as the default host with Debian's kernel (idempotent).

Run by scripts/setup. The host's run dir is <data dir>/guests; users may
share directories under KDEVWEB_SHARE_ROOTS (default <data dir>/shares).
"""

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from guests import guest_services
from guests.runtime.kernel import debian_kernels
from guests.vm_models import Host, Kernel


class Command(BaseCommand):
    help = "Create the default host and register Debian's newest kernel as its default kernel (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="default")
        parser.add_argument("--run-dir", default="")
        parser.add_argument("--memory-mib", type=int, default=0, help="memory budget (default: half the RAM)")

    def handle(self, *args, host, run_dir, memory_mib, **options):
        say = self.stdout.write if options["verbosity"] >= 1 else (lambda _text: None)
        data = Path(settings.DATA_DIR)
        if not memory_mib:
            memory_mib = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (2 << 20))
        roots = os.getenv("KDEVWEB_SHARE_ROOTS", str(data / "shares")).replace(",", "\n")
        if "KDEVWEB_SHARE_ROOTS" not in os.environ:
            (data / "shares").mkdir(mode=0o700, parents=True, exist_ok=True)
        with transaction.atomic():
            row, created = Host.objects.get_or_create(
                name=host, defaults={"run_dir": run_dir or str(data / "guests" / host),
                                     "memory_budget_mib": memory_mib, "share_roots": roots,
                                     # libvirt guests (guests.libvirt_agent) where libvirt is installed
                                     "libvirt_uri": "qemu:///system" if shutil.which("libvirtd") else ""})
        say(f"{'Created' if created else 'Host'} {row.name}: run dir {row.run_dir}, "
                          f"budget {row.memory_budget_mib} MiB")
        kernels = debian_kernels()
        if not kernels:
            say("No Debian kernel in /boot (apt-get install linux-image-amd64).")
            return
        newest = kernels[-1]
        if Kernel.objects.filter(host=row, image=str(newest.image)).exists():
            return
        kernel = guest_services.kernel_add(host=row, name=f"debian-{newest.version}", image=str(newest.image),
                                           modules_dir=str(newest.modules_dir), user=None,
                                           is_default=not row.kernels.filter(is_default=True).exists())
        say(f"Registered kernel {kernel}.")
