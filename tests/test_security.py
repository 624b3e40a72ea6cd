"""Issue 7, web side: who may create labs, member lookups that reveal nothing.

(Privilege separation, Redis and file modes: tests/test_security_stack.py;
websockets: tests/test_security_ws.py.)
"""

import pytest
from django.contrib.auth.models import Permission

from guests.models import Lab, Membership

pytestmark = pytest.mark.django_db


def test_plain_user_cannot_create_a_lab(client_for, users):
    """A lab's creator becomes its admin and so may run Nix builds: not self-service."""
    client = client_for(users["outsider"])
    page = client.get("/").content.decode()
    assert "Create lab" not in page and "/labs/new/" not in page
    before = Lab.objects.count()
    resp = client.post("/labs/new/", {"name": "Mine", "slug": "mine"})
    assert resp.status_code == 403
    assert Lab.objects.count() == before and not Lab.objects.filter(slug="mine").exists()


def test_lab_admin_of_another_lab_cannot_create_one_either(client_for, users, lab):
    assert client_for(users["admin"]).post("/labs/new/", {"name": "M", "slug": "m2"}).status_code == 403


@pytest.mark.parametrize("how", ["staff", "permission"])
def test_staff_or_granted_users_create_labs(client_for, users, how):
    user = users["outsider"]
    if how == "staff":
        user.is_staff = True
        user.save()
    else:
        user.user_permissions.add(Permission.objects.get(codename="add_lab", content_type__app_label="guests"))
    client = client_for(user)
    assert "Create lab" in client.get("/").content.decode()
    resp = client.post("/labs/new/", {"name": "Mine", "slug": "mine"})
    assert resp.status_code == 302
    assert Membership.objects.get(lab__slug="mine", user=user).role == "admin"


def test_member_add_does_not_reveal_which_users_exist(client_for, users, lab, django_user_model):
    django_user_model.objects.create_user("exists-elsewhere", password="x-pw-123456")
    client = client_for(users["admin"])
    url = f"/labs/{lab.slug}/members/add/"

    def error(username):
        resp = client.post(url, {"username": username, "role": "viewer"})
        assert resp.status_code == 400
        errors = resp.context["member_form"].errors["username"]
        return [e.replace(username, "NAME") for e in errors]

    unknown = error("no-such-user-at-all")
    member = error("viewer")  # exists, already a member
    assert "Could not add" in unknown[0]
    assert unknown == member, "the answer must not depend on whether the user exists"
    # An existing non-member is added.
    assert client.post(url, {"username": "exists-elsewhere", "role": "viewer"}).status_code == 302


# -- source inputs -------------------------------------------------------------


@pytest.fixture
def outside_secret():
    import os
    import uuid
    from pathlib import Path

    path = Path("/tmp") / f"kdevweb-root-only-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"secret\n")
    os.close(fd)
    yield path
    path.unlink()


def _source_errors(client, lab, url: str, field: str = "sources-0-url") -> tuple[int, str]:
    from guests.models import Configuration
    from tests.test_configurations import post_data

    extra = {"sources-0-package": "xfsprogs", "sources-0-url": url} if field == "sources-0-url" else {field: url}
    before = Configuration.objects.count()
    resp = client.post(f"/labs/{lab.slug}/configs/new/", post_data(**extra))
    if resp.status_code != 302:
        assert Configuration.objects.count() == before
    return resp.status_code, resp.content.decode()


def test_local_sources_outside_the_allowed_roots_are_refused(client_for, users, lab, outside_secret, tmp_path):
    from tests.helpers import STANDIN

    client = client_for(users["operator"])
    link = tmp_path / "innocent"  # inside an allowed root, pointing out of it
    link.symlink_to(outside_secret)
    for url in (f"path:{outside_secret}", f"git+file:{outside_secret}", f"file://{outside_secret}",
                f"path://{outside_secret}", f"path:{STANDIN}/../../../../..{outside_secret}", f"path:{link}",
                "path:/root", "path:relative/dir", "path:/srv/%2e%2e/root", "git+ssh://git@example.org/x",
                "http://example.org/x.tar.gz"):
        status, page = _source_errors(client, lab, url)
        assert status == 400, url
        assert "outside the directories" in page or "not a source kdevweb may fetch" in page, url
    status, page = _source_errors(client, lab, "path:/root/nixos-flake", field="nixos_flake_url")
    assert status == 400 and "outside the directories" in page


def test_remote_and_allowed_local_sources_are_accepted(client_for, users, lab, settings):
    from tests.helpers import STANDIN

    settings.ALLOWED_SOURCE_ROOTS = [str(STANDIN)]  # the shipped default
    client = client_for(users["operator"])
    for i, url in enumerate(("github:xfs/xfsprogs", "git+https://example.org/x.git", "https://example.org/x.tar.gz",
                             f"path:{STANDIN}/modules", f"git+file:{STANDIN}")):
        from tests.test_configurations import post_data

        resp = client.post(f"/labs/{lab.slug}/configs/new/",
                           post_data(name=f"ok-{i}", **{"sources-0-package": "xfsprogs", "sources-0-url": url}))
        assert resp.status_code == 302, (url, resp.content.decode()[-2000:])


def test_default_allows_only_the_standin_locally():
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT, STANDIN

    env = {k: v for k, v in os.environ.items() if k != "KDEVWEB_ALLOWED_SOURCE_ROOTS"}
    out = subprocess.run([sys.executable, "-c", "import json, kdevweb.settings as s; "
                          "print(json.dumps(s.ALLOWED_SOURCE_ROOTS))"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [str(STANDIN)]


# -- production defaults: error pages -------------------------------------------------


def test_foreign_host_gets_a_clean_400(client, settings):
    settings.DEBUG = False
    resp = client.get("/", HTTP_HOST="evil.example")
    assert resp.status_code == 400
    page = resp.content.decode()
    assert "Bad request" in page and 'class="brand"' in page  # the normal layout
    for leak in ("Traceback", "DisallowedHost", "ALLOWED_HOSTS", "evil.example", str(settings.BASE_DIR)):
        assert leak not in page, leak


def test_403_says_why_in_the_layout_and_logs_no_traceback(client_for, users, lab, caplog):
    with caplog.at_level("WARNING", logger="django.request"):
        resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/new/")
    assert resp.status_code == 403
    page = resp.content.decode()
    assert "Not allowed" in page and "This needs the operator role in Storage lab." in page
    assert 'class="brand"' in page and "Traceback" not in page
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(r.exc_info is None and not r.exc_text for r in records)


def test_404_lists_no_urls(client_for, users, settings):
    settings.DEBUG = False
    resp = client_for(users["viewer"]).get("/no/such/page/")
    assert resp.status_code == 404
    page = resp.content.decode()
    assert "Not found" in page and "labs/&lt;slug" not in page and "URLconf" not in page


def test_500_page_shows_no_internals(rf):
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "Something went wrong" in page and "Traceback" not in page


# -- login throttling, the first admin password ------------------------------------------


@pytest.fixture
def throttle_reset():
    from django.core.cache import cache

    yield
    cache.delete_many([k for k in cache._cache.get_client().keys("kdevweb:*login-fail:*")])


def _login(client, username, password, url="/login/"):
    return client.post(url, {"username": username, "password": password})


def test_login_is_throttled_after_repeated_failures(client, django_user_model, settings, throttle_reset):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    django_user_model.objects.create_user("target", password="right-password-1")
    django_user_model.objects.create_user("bystander", password="bystander-pw-1")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        assert _login(client, "target", "wrong").status_code == 200
    resp = _login(client, "target", "right-password-1")
    assert resp.status_code == 200 and "_auth_user_id" not in client.session, "the right password got in"
    assert "Too many failed logins" in resp.content.decode()
    # The admin's login form goes through the same backend.
    _login(client, "target", "right-password-1", url="/admin/login/")
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not locked by these few failures.
    assert _login(client, "bystander", "bystander-pw-1").status_code == 302


def test_throttle_ends_after_its_window(client, django_user_model, settings, throttle_reset):
    import time

    settings.LOGIN_THROTTLE_SECONDS = 2
    django_user_model.objects.create_user("patient", password="right-password-2")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        _login(client, "patient", "wrong")
    assert "_auth_user_id" not in (_login(client, "patient", "right-password-2") and client.session)
    time.sleep(2.2)
    assert _login(client, "patient", "right-password-2").status_code == 302


def test_first_admin_password_file_goes_after_first_login(client, django_user_model, settings, tmp_path,
                                                        throttle_reset):
    settings.DATA_DIR = tmp_path
    (tmp_path / "admin-password").write_text("generated-pw-123\n")
    django_user_model.objects.create_superuser("admin", password="generated-pw-123")
    assert _login(client, "admin", "wrong").status_code == 200
    assert (tmp_path / "admin-password").exists()
    assert _login(client, "admin", "generated-pw-123").status_code == 302
    assert not (tmp_path / "admin-password").exists()


def test_download_of_a_non_latin1_name_uses_rfc6266(client_for, users, lab):
    from guests import services
    from tests.helpers import sample_settings

    config = services.configuration_create(lab=lab, name="гость-ext4 ☃", settings=sample_settings(),
                                           user=users["operator"])
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/r/1/download/")
    assert resp.status_code == 200
    header = resp["Content-Disposition"]
    header.encode("latin-1")  # a valid header at all
    assert header.startswith("attachment;") and "filename*=utf-8''" in header.lower()
    assert "%D0%B3%D0%BE%D1%81%D1%82%D1%8C-ext4" in header


def test_csrf_failure_page_is_in_the_layout(users):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["admin"])
    resp = client.post("/labs/new/", {"name": "x", "slug": "x"})
    assert resp.status_code == 403
    page = resp.content.decode()
    assert "The form could not be accepted" in page and 'class="brand"' in page and "CSRF_" not in page
