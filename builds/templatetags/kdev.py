"""Times as people read them: absolute with its zone, plus "3 min ago".

The relative part is rendered here too (pages work without scripts);
static/kdevweb/times.js keeps it current while the page stays open.
"""

from django import template
from django.utils.html import format_html

from builds import timefmt

register = template.Library()


@register.simple_tag
def when(value, relative=True):
    """<time> with the absolute local time and zone; relative after it."""
    if not value:
        return ""
    iso = value.isoformat()
    if not relative:
        return format_html('<time datetime="{}">{}</time>', iso, timefmt.absolute(value))
    return format_html('<time datetime="{}">{}</time> <span class="ago" data-since="{}">({})</span>',
                       iso, timefmt.absolute(value), iso, timefmt.ago(value))


@register.simple_tag
def seconds(value):
    return timefmt.duration(value)
