"""Build history: filters, pagination and a constant query count with
10,000 builds; the duration trend; deleting a build."""

from datetime import timedelta

import pytest
from django.utils import timezone

from builds.models import Build, Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def many_builds(lab, config, users):
    now = timezone.now()
    statuses = [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.LOST]
    Build.objects.bulk_create(
        Build(lab=lab, revision=config.latest, attr="toplevel", status=statuses[i % 4],
              created_by=users["operator"] if i % 2 else users["admin"],
              started=now - timedelta(minutes=i, seconds=30), finished=now - timedelta(minutes=i))
        for i in range(10_000)
    )
    # auto_now_add ignores values in bulk_create: spread creation times out.
    for offset, pk in enumerate(Build.objects.order_by("pk").values_list("pk", flat=True)[:20]):
        Build.objects.filter(pk=pk).update(created=now - timedelta(days=offset))


def test_first_page_is_constant_in_queries(client_for, users, lab, many_builds, django_assert_max_num_queries):
    client = client_for(users["viewer"])
    with django_assert_max_num_queries(10):
        resp = client.get(f"/labs/{lab.slug}/builds/")
    assert resp.status_code == 200 and "page 1 of 200" in resp.content.decode()
    with django_assert_max_num_queries(10):
        resp = client.get(f"/labs/{lab.slug}/builds/?status=failed&page=7")
    assert "page 7 of 50" in resp.content.decode()


def test_filters(client_for, users, lab, config, many_builds):
    client = client_for(users["viewer"])
    base = f"/labs/{lab.slug}/builds/"
    assert "page 1 of 100" in client.get(base + "?who=operator").content.decode()
    today = timezone.now().date()
    resp = client.get(base + f"?since={today - timedelta(days=3)}&until={today - timedelta(days=1)}")
    assert resp.context["page"].paginator.count == 3
    resp = client.get(base + f"?configuration={config.pk}&status=lost")
    assert resp.context["page"].paginator.count == 2500


@pytest.mark.parametrize("query", ["status=bogus", "since=yesterday", "configuration=999999",
                                   "since=2026-02-02&until=2026-01-01", "page=abc"])
def test_bad_filters_are_a_clear_400_or_first_page(client_for, users, lab, config, query):
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/?{query}")
    assert resp.status_code in (200, 400)
    if query != "page=abc":
        assert resp.status_code == 400 and "errorlist" in resp.content.decode()


def test_trend(client_for, users, lab, config):
    now = timezone.now()
    for seconds in (3, 5, 4):
        Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                             started=now, finished=now + timedelta(seconds=seconds))
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/durations/")
    assert resp.status_code == 200
    assert 'points="0.0,' in resp.content.decode() and "5.0 s" in resp.content.decode()


def test_delete_removes_row_and_workdir(client_for, users, lab, config):
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.QUEUED)
    build.workdir.mkdir(parents=True)
    client = client_for(users["operator"])
    client.post(f"/labs/{lab.slug}/builds/{build.pk}/delete/")
    assert Build.objects.filter(pk=build.pk).exists(), "an active build is not deleted"
    Build.objects.filter(pk=build.pk).update(status=Status.FAILED)
    resp = client.post(f"/labs/{lab.slug}/builds/{build.pk}/delete/")
    assert resp.status_code == 302 and not Build.objects.filter(pk=build.pk).exists()
    assert not build.workdir.exists()


def test_compare_without_outputs_says_so(client_for, users, lab, config):
    a = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    b = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    client = client_for(users["viewer"])
    resp = client.get(f"/labs/{lab.slug}/builds/compare/?a={a.pk}&b={b.pk}")
    assert resp.status_code == 200 and "need an output" in resp.content.decode()
    assert client.get(f"/labs/{lab.slug}/builds/compare/?a={a.pk}").status_code == 400
    assert client.get(f"/labs/{lab.slug}/builds/compare/?a={a.pk}&b=99999").status_code == 404
