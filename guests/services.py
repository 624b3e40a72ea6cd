"""State changes for labs, members and configurations. Views stay thin and
call these; each takes keyword-only arguments and does one thing atomically.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from . import flake
from .models import Configuration, Lab, Membership, Revision, Role


def lab_create(*, name: str, slug: str, user) -> Lab:
    """Create a lab; its creator becomes its first admin."""
    with transaction.atomic():
        if Lab.objects.filter(slug=slug).exists():
            raise ValidationError(f"A lab with the short name “{slug}” exists already.")
        lab = Lab.objects.create(name=name, slug=slug)
        Membership.objects.create(lab=lab, user=user, role=Role.ADMIN)
    return lab


def member_add(*, lab: Lab, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(f"There is no user “{username}”.")
    if Membership.objects.filter(lab=lab, user=user).exists():
        raise ValidationError(f"{username} is already a member; change their role instead.")
    return Membership.objects.create(lab=lab, user=user, role=role)


def _keep_an_admin(lab: Lab, membership: Membership) -> None:
    others = lab.memberships.filter(role=Role.ADMIN).exclude(pk=membership.pk)
    if membership.role == Role.ADMIN and not others.exists():
        raise ValidationError("A lab needs at least one admin.")


def member_set_role(*, membership: Membership, role: str) -> None:
    with transaction.atomic():
        if role != Role.ADMIN:
            _keep_an_admin(membership.lab, membership)
        membership.role = role
        membership.save(update_fields=["role"])


def member_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        _keep_an_admin(membership.lab, membership)
        membership.delete()


def revision_create(
    *, configuration: Configuration, settings: dict[str, Any], extra_module: str, message: str, user
) -> Revision:
    """Add the next immutable revision, storing its rendered files with it."""
    with transaction.atomic():
        # Lock the configuration row so two concurrent saves get distinct numbers.
        Configuration.objects.select_for_update().filter(pk=configuration.pk).first()
        last = configuration.revisions.aggregate(n=Max("number"))["n"] or 0
        number = last + 1
        files = flake.render_files(
            settings, extra_module=extra_module, title=f"{configuration.lab.slug}/{configuration.name} r{number}"
        )
        return Revision.objects.create(
            configuration=configuration,
            number=number,
            settings=settings,
            extra_module=extra_module,
            files=files,
            message=message,
            created_by=user,
        )


def configuration_create(
    *, lab: Lab, name: str, settings: dict[str, Any], extra_module: str = "", message: str = "",
    user, cloned_from: Revision | None = None,
) -> Configuration:
    try:
        with transaction.atomic():
            config = Configuration.objects.create(lab=lab, name=name, created_by=user, cloned_from=cloned_from)
            revision_create(configuration=config, settings=settings, extra_module=extra_module,
                            message=message or "created", user=user)
    except IntegrityError as exc:
        raise ValidationError(f"The lab already has a configuration named “{name}”.") from exc
    return config


def configuration_clone(*, revision: Revision, name: str, user) -> Configuration:
    """A new configuration whose first revision equals ``revision``."""
    return configuration_create(
        lab=revision.configuration.lab,
        name=name,
        settings=revision.settings,
        extra_module=revision.extra_module,
        message=f"cloned from {revision}",
        user=user,
        cloned_from=revision,
    )
