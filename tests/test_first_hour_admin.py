"""The admin cannot falsify history: builds and revisions are read-only
there; only finished builds may be deleted, through the app's service."""

import pytest

from builds.models import Build, Status
from guests.models import Revision

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="pw-root-1")
    client.force_login(user)
    return client


def test_build_cannot_be_added_or_changed(staff, lab, config):
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                                 exit_code=0, out_path="/nix/store/aaa-real")
    assert staff.get("/admin/builds/build/add/").status_code == 403
    assert staff.post("/admin/builds/build/add/", {"lab": lab.pk, "revision": config.latest.pk,
                                                   "status": "succeeded", "attr": "x"}).status_code == 403
    page = staff.get(f"/admin/builds/build/{build.pk}/change/")
    assert page.status_code == 200  # viewing is fine
    assert 'name="status"' not in page.content.decode() and 'name="_save"' not in page.content.decode()
    staff.post(f"/admin/builds/build/{build.pk}/change/",
               {"status": "failed", "exit_code": "1", "out_path": "/nix/store/fake", "attr": "toplevel"})
    build.refresh_from_db()
    assert (build.status, build.exit_code, build.out_path) == ("succeeded", 0, "/nix/store/aaa-real")
    assert Build.objects.count() == 1


def test_revision_cannot_be_added_changed_or_deleted(staff, config):
    rev = config.latest
    assert staff.get("/admin/guests/revision/add/").status_code == 403
    staff.post(f"/admin/guests/revision/{rev.pk}/change/", {"message": "rewritten", "number": 7})
    assert staff.get(f"/admin/guests/revision/{rev.pk}/delete/").status_code == 403
    assert staff.post(f"/admin/guests/revision/{rev.pk}/delete/", {"post": "yes"}).status_code == 403
    rev.refresh_from_db()
    assert (rev.message, rev.number) == ("first", 1) and Revision.objects.count() == 1


def test_only_finished_builds_are_deleted_with_their_workdir(staff, lab, config):
    running = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.RUNNING)
    done = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    done.workdir.mkdir(parents=True)
    assert staff.post(f"/admin/builds/build/{running.pk}/delete/", {"post": "yes"}).status_code == 403
    staff.post("/admin/builds/build/", {"action": "delete_selected", "_selected_action": [running.pk]})
    staff.post("/admin/builds/build/", {"action": "delete_finished", "_selected_action": [running.pk, done.pk]})
    assert list(Build.objects.values_list("pk", flat=True)) == [running.pk]
    assert not done.workdir.exists()


def test_labs_and_configurations_cannot_be_deleted_or_moved(staff, lab, config):
    assert staff.post(f"/admin/guests/lab/{lab.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff.post(f"/admin/guests/configuration/{config.pk}/delete/", {"post": "yes"}).status_code == 403
    staff.post(f"/admin/guests/configuration/{config.pk}/change/", {"name": config.name, "lab": lab.other.pk})
    config.refresh_from_db()
    assert config.lab_id == lab.pk
