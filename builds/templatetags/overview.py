"""Build summaries for the lab pages, which the guests views render
without knowing about builds (builds depend on guests, not the reverse)."""

from django import template

from builds import selectors

register = template.Library()


@register.simple_tag
def labs_overview(labs, user):
    return selectors.labs_overview(user=user, labs=labs)


@register.simple_tag
def lab_configurations(lab):
    return selectors.configurations_with_last_build(lab=lab)
