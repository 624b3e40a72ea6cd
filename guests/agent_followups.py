"""What the host agent does once a guest's processes are gone, for the
two requests that outlive them: delete (remove its files, then the row)
and roll back and restart (start it again on its new build).

Called by guests/hostagent.py for QEMU guests and, through it, by
guests/libvirt_agent.py for libvirt guests (which first removes its own
domain and overlays).
"""

from __future__ import annotations

import logging
import shutil

from django.core.exceptions import ValidationError

from guests.console import transcript_dir
from guests.guest_stream import publish
from guests.runtime.transcript_removal import mark_for_removal
from guests.vm_models import Guest, GuestEvent, Host

log = logging.getLogger("kdevweb.hostagent")


def guest_files_remove(*, host: Host, guest: Guest) -> None:
    """The run dir always; disks and transcripts as the user chose on the
    delete page; then the row. The transcripts are only marked: the
    console relay removes them once its relay of the guest stopped
    (guests/runtime/transcript_removal.py), so the two never race."""
    shutil.rmtree(host.guest_run_dir(guest.pk), ignore_errors=True)
    if guest.delete_disks:
        shutil.rmtree(host.guest_disk_dir(guest.pk), ignore_errors=True)
    if guest.delete_transcripts:
        mark_for_removal(transcript_dir(host, guest.pk, "ttyS0").parent)
    log.info("deleted guest %s (%s) of lab %s: disks %s, transcripts %s", guest.pk, guest.name, guest.lab_id,
             "deleted" if guest.delete_disks else "kept",
             "deleted once its console relay stops" if guest.delete_transcripts else "kept")
    lab_id, guest_id = guest.lab_id, guest.pk
    guest.delete()
    publish(lab_id, guest_id)


def guest_restart_after_stop(*, guest: Guest) -> None:
    """After an ``exited`` was recorded: if the guest was stopped to switch
    builds ("roll back and restart"), ask for its start the way the Start
    button does (guest_services.guest_start: same checks, same request).
    Taken once: the flag is cleared whether or not the start can be asked."""
    from guests import guest_services

    if not Guest.objects.filter(pk=guest.pk, start_after_stop=True).update(start_after_stop=False):
        return
    guest.refresh_from_db()
    if guest.state != "stopped":
        GuestEvent.objects.create(guest=guest, kind="restart", source="agent", state=guest.state,
                                  text=f"not restarted: it ended {guest.state}")
        return
    try:
        guest_services.guest_start(guest=guest, user=guest.started_by, note="restart after switching builds")
    except ValidationError as exc:
        GuestEvent.objects.create(guest=guest, kind="restart", source="agent", state=guest.state,
                                  text="not restarted: " + " ".join(exc.messages))
    guest.refresh_from_db()
    publish(guest.lab_id, guest.pk)
