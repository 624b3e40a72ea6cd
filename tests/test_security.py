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
