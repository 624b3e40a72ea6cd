"""Every URL refuses anonymous users, outsiders and too-small roles.

The URLconf is enumerated, so a new view cannot slip past: each route must
either be a lab view (decorated with `lab_view`, which records its minimum
role) or appear in PUBLIC/LOGIN_ONLY below with a reason.
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from builds.models import Build
from guests.models import ROLE_RANK

# Routes anyone may reach (the login page must be reachable to log in;
# the favicon is a redirect to a static file).
PUBLIC = {"login", "logout", "favicon"}
# Routes any logged-in user may use: their own lab list, creating a lab.
LOGIN_ONLY = {"index", "lab-new"}


def _routes(patterns=None, prefix=""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            if p.app_name == "admin" or str(p.pattern) == "admin/":
                continue  # Django's admin has its own staff-only checks (tested below)
            yield from _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield p.name, prefix + str(p.pattern), p.callback


def _url(route: str, ids: dict) -> str:
    url = "/" + route
    for key, value in ids.items():
        url = url.replace(f"<slug:{key}>", str(value)).replace(f"<int:{key}>", str(value))
    assert "<" not in url, f"no test value for a parameter of {route}"
    return url


@pytest.fixture
def ids(lab, config, users):
    from guests.models import Membership

    build = Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel")
    member = Membership.objects.get(lab=lab, user=users["viewer"])
    guest = _guest(lab, config, users)
    return {"lab_slug": lab.slug, "config_id": config.pk, "number": 1, "build_id": build.pk,
            "member_id": member.pk, "guest_id": guest.pk}


def _guest(lab, config, users):
    """A defined guest row (no host agent runs: requests only get recorded)."""
    from guests.vm_models import Guest, Host, Kernel

    host = Host.objects.create(name="access-host", run_dir="/nonexistent/kdevweb-access")
    kernel = Kernel.objects.create(host=host, name="k", image="/nonexistent/vmlinuz", modules_dir="/nonexistent",
                                   version="0")
    build = Build.objects.create(lab=lab, revision=config.latest, created_by=users["operator"], attr="toplevel",
                                 status="succeeded", out_path="/nonexistent/out")
    return Guest.objects.create(lab=lab, name="g", configuration=config, build=build, host=host, kernel=kernel)


def test_every_route_is_classified():
    for name, route, callback in _routes():
        assert name in PUBLIC | LOGIN_ONLY or hasattr(callback, "min_role"), (
            f"{route} ({name}) is neither a lab view nor listed as public/login-only"
        )


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client, ids):
    for name, route, _ in _routes():
        if name in PUBLIC:
            continue
        for method in ("get", "post"):
            resp = getattr(client, method)(_url(route, ids))
            assert resp.status_code == 302 and resp["Location"].startswith("/login/"), (method, route)


@pytest.mark.django_db
def test_outsider_cannot_see_the_lab(client_for, users, ids):
    client = client_for(users["outsider"])
    for name, route, callback in _routes():
        if not hasattr(callback, "min_role"):
            continue
        for method in ("get", "post"):
            resp = getattr(client, method)(_url(route, ids))
            assert resp.status_code == 404, (method, route, resp.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_roles_below_the_minimum_are_refused(client_for, users, ids, role):
    client = client_for(users[role])
    checked = 0
    for name, route, callback in _routes():
        minimum = getattr(callback, "min_role", None)
        if minimum is None or ROLE_RANK[role] >= ROLE_RANK[minimum]:
            continue
        for method in ("get", "post"):
            resp = getattr(client, method)(_url(route, ids))
            assert resp.status_code == 403, (role, method, route, resp.status_code)
            checked += 1
    assert checked > 0


@pytest.mark.django_db
def test_viewer_reads_lab_pages(client_for, users, ids):
    client = client_for(users["viewer"])
    for name in ("lab", "config", "build-list", "build", "guest-list", "guest", "kernel-list", "guest-console"):
        route = next(r for n, r, _ in _routes() if n == name)
        assert client.get(_url(route, ids)).status_code == 200, name


@pytest.mark.django_db
def test_state_never_changes_on_get(client_for, users, ids):
    """POST-only views answer GET with 405, even for an admin."""
    from guests.models import Configuration, Membership

    client = client_for(users["admin"])
    before = (Configuration.objects.count(), Membership.objects.count(), Build.objects.count())
    for name, route, _ in _routes():
        if name in {"member-add", "member-role", "member-remove", "config-clone", "build-start",
                    "build-cancel", "build-retry", "lab-new", "build-delete", "guest-start", "guest-stop",
                    "guest-force-off", "guest-reboot", "guest-rollback", "guest-delete", "kernel-add"}:
            assert client.get(_url(route, ids)).status_code == 405, name
    assert before == (Configuration.objects.count(), Membership.objects.count(), Build.objects.count())


@pytest.mark.django_db
def test_admin_site_is_staff_only(client_for, users):
    resp = client_for(users["admin"]).get("/admin/")
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
