"""Who may do what in a lab. Every lab view goes through `lab_view`.

Roles are ranked: viewers read, operators create/edit/build/run, admins
also manage members. Non-members get a 404 (a lab's existence is not their
business); members without the role get a 403.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import ROLE_RANK, Lab, Membership, Role


def lab_role(user, lab: Lab) -> str | None:
    """The user's role in ``lab``, or None. Superusers act as admins everywhere."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(lab=lab, user=user).only("role").first()
    return membership.role if membership else None


def can_create_lab(user) -> bool:
    """Creating a lab makes its creator admin, and so operator, of it: the
    power to run Nix builds. Only staff or users granted "Can add lab" (in
    the admin) get it; the creator role must not be self-service."""
    return user.is_authenticated and (user.is_staff or user.has_perm("guests.add_lab"))


def role_at_least(role: str | None, minimum: str) -> bool:
    return role is not None and ROLE_RANK[Role(role)] >= ROLE_RANK[Role(minimum)]


def lab_view(minimum: str = Role.VIEWER):
    """Decorate a view taking ``lab_slug``: it receives ``lab`` and ``role``."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, lab_slug, *args, **kwargs):
            lab = get_object_or_404(Lab, slug=lab_slug)
            role = lab_role(request.user, lab)
            if role is None:
                raise Http404("No such lab.")
            if not role_at_least(role, minimum):
                raise PermissionDenied(f"This needs the {minimum} role in {lab}.")
            request.lab_role = role
            return view(request, lab, *args, **kwargs)

        wrapper.min_role = minimum
        return wrapper

    return decorator
