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
    if Lab.objects.filter(slug=slug).exists():
        raise ValidationError(f"A lab with the short name “{slug}” exists already.")
    try:
        with transaction.atomic():
            lab = Lab.objects.create(name=name, slug=slug)
            Membership.objects.create(lab=lab, user=user, role=Role.ADMIN)
    except IntegrityError:
        # Another request created the same slug between the check and the
        # insert (PostgreSQL lets both check at once); the unique index
        # decided, and the loser gets the same answer as a late request.
        if Lab.objects.filter(slug=slug).exists():
            raise ValidationError(f"A lab with the short name “{slug}” exists already.") from None
        raise
    return lab


def member_add(*, lab: Lab, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(f"There is no user “{username}”.")
    already = ValidationError(f"{username} is already a member; change their role instead.")
    if Membership.objects.filter(lab=lab, user=user).exists():
        raise already
    try:
        with transaction.atomic():
            return Membership.objects.create(lab=lab, user=user, role=role)
    except IntegrityError:
        # Added by a concurrent request after the check: same answer.
        if Membership.objects.filter(lab=lab, user=user).exists():
            raise already from None
        raise


def _locked_for_role_change(membership: Membership) -> Membership:
    """Lock the membership's lab, then re-read the membership.

    Every change that could remove a lab's last admin takes this lock first,
    so on PostgreSQL two admins demoting each other at once run one after
    the other and the second sees the first's change (SQLite's IMMEDIATE
    transactions already serialise them). NO KEY: rows that merely point at
    the lab (configurations, builds) can still be inserted meanwhile. The
    caller's object may be stale: it was loaded before the lock.
    """
    Lab.objects.select_for_update(no_key=True).filter(pk=membership.lab_id).first()
    current = Membership.objects.filter(pk=membership.pk).first()
    if current is None:
        raise ValidationError(f"{membership.user} is no longer a member of this lab.")
    return current


def _keep_an_admin(membership: Membership) -> None:
    others = Membership.objects.filter(lab_id=membership.lab_id, role=Role.ADMIN).exclude(pk=membership.pk)
    if membership.role == Role.ADMIN and not others.exists():
        raise ValidationError("A lab needs at least one admin.")


def member_set_role(*, membership: Membership, role: str) -> None:
    with transaction.atomic():
        current = _locked_for_role_change(membership)
        if role != Role.ADMIN:
            _keep_an_admin(current)
        current.role = role
        current.save(update_fields=["role"])
    membership.role = role


def member_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        try:
            current = _locked_for_role_change(membership)
        except ValidationError:
            return  # removed meanwhile: what was asked for is done
        _keep_an_admin(current)
        current.delete()


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
