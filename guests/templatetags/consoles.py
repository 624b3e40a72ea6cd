"""Console bits of the guest pages: ``{% load consoles %}``.

``{% console_panel guest %}`` on the guest page (preview of the serial
console's last lines, viewer count, the console link and the per-boot
transcripts); ``{% console_cell guest %}`` in the guest list (viewer count
and the last line). Both read Redis only and render without it.
"""

from django import template

from guests.console import CONSOLES, console_boots, console_overview

register = template.Library()


@register.inclusion_tag("guests/_console_panel.html")
def console_panel(guest, lines: int = 12):
    overview = console_overview([guest], lines=lines)[guest.pk]
    return {"guest": guest, "preview": overview["preview"], "viewers": overview["viewers"],
            "boots": {c: console_boots(guest, c) for c in CONSOLES}}


@register.inclusion_tag("guests/_console_cell.html")
def console_cell(guest):
    overview = console_overview([guest], lines=1)[guest.pk]
    return {"guest": guest, **overview}
