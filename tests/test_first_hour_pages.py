"""The build page, lab pages and small conveniences, rendered server-side:
times with zone and relative form, truthful phase and counts, Retry only on
finished builds, the log as text, messages, favicon."""

from datetime import timedelta

import pytest
from django.utils import timezone

from builds import logstore
from builds.models import Build, Status

pytestmark = pytest.mark.django_db


def make(lab, config, **fields):
    return Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", **fields)



def page(client, lab, build):
    resp = client.get(f"/labs/{lab.slug}/builds/{build.pk}/")
    assert resp.status_code == 200
    return resp.content.decode()


def test_times_with_zone_and_relative_and_status_in_title(client_for, users, lab, config):
    now = timezone.now()
    build = make(lab, config, status=Status.SUCCEEDED, started=now - timedelta(minutes=3, seconds=20),
                 finished=now - timedelta(minutes=3), created_by=users["operator"])
    Build.objects.filter(pk=build.pk).update(created=now - timedelta(minutes=4))
    html = page(client_for(users["viewer"]), lab, build)
    assert f"<title>Succeeded · Build #{build.pk} · kdevweb</title>" in html
    for cell, ago in (("created-at", "(4 min ago)"), ("started-at", "(3 min ago)"), ("finished-at", "(3 min ago)")):
        start = html.index(f'id="{cell}"')
        assert " UTC</time>" in html[start:start + 200] and ago in html[start:start + 300], cell
    assert "20.0 s" in html


@pytest.mark.parametrize("status,progress,phase,counts", [
    (Status.SUCCEEDED, {"stage": "finishing", "builds": {"done": 3, "expected": 3}}, "done", "3 built · 0 fetched"),
    (Status.SUCCEEDED, {"stage": "finishing", "builds": {"done": 0, "expected": 0}},
     "already built — nothing to do", "0 built · 0 fetched"),
    (Status.FAILED, {"stage": "evaluating"}, "failed during evaluation", "0 built"),
    (Status.FAILED, {"stage": "building", "builds": {"done": 1, "expected": 4, "failed": 1}},
     "failed while building", "1 built · 0 fetched · 1 failed"),
    (Status.CANCELLED, {"stage": "building", "builds": {"done": 0, "expected": 0}}, "cancelled", "0 built"),
    (Status.RUNNING, {"stage": "building", "phase": "buildPhase", "builds": {"done": 1, "expected": 3}},
     "buildPhase", "builds 1/3"),
])
def test_phase_and_counts_end_truthfully(client_for, users, lab, config, status, progress, phase, counts):
    build = make(lab, config, status=status, progress=progress)
    html = page(client_for(users["viewer"]), lab, build)
    assert f'id="phase" class="phase">{phase}</span>' in html
    assert counts in html
    if status != Status.RUNNING:
        assert "evaluating" not in html and "finishing" not in html


def test_retry_only_on_finished_builds(client_for, users, lab, config):
    client = client_for(users["operator"])
    running = make(lab, config, status=Status.RUNNING)
    html = page(client, lab, running)
    assert 'id="retry-form" hidden' in html and 'id="cancel-form">' in html
    resp = client.post(f"/labs/{lab.slug}/builds/{running.pk}/retry/", follow=True)
    assert Build.objects.count() == 1 and "retry it once it has ended" in resp.content.decode()
    done = make(lab, config, status=Status.FAILED)
    html = page(client, lab, done)
    assert 'id="cancel-form" hidden' in html and 'id="retry-form">' in html
    resp = client.post(f"/labs/{lab.slug}/builds/{done.pk}/retry/", follow=True)
    retry = Build.objects.get(retry_of=done)
    assert f"Build #{retry.pk} queued: a retry of #{done.pk}." in resp.content.decode()


def test_start_says_so(client_for, users, lab, config):
    resp = client_for(users["operator"]).post(f"/labs/{lab.slug}/configs/{config.pk}/r/1/build/", follow=True)
    build = Build.objects.get()
    assert f"Build #{build.pk} of xfs-guest r1 queued." in resp.content.decode()


@pytest.mark.parametrize("compressed", [False, True])
def test_log_as_text_in_the_browser_and_as_download(client_for, users, lab, config, compressed):
    build = make(lab, config, status=Status.SUCCEEDED)
    build.workdir.mkdir(parents=True)
    writer = logstore.LogWriter(build.workdir)
    writer.write(["line one", "<b>two</b>"])
    writer.close()
    if compressed:
        logstore.compress(build.workdir)
    client = client_for(users["viewer"])
    resp = client.get(f"/labs/{lab.slug}/builds/{build.pk}/log/?view=1")
    assert resp["Content-Type"] == "text/plain; charset=utf-8"
    assert resp["Content-Disposition"].startswith("inline")
    assert b"".join(resp.streaming_content) == b"line one\n<b>two</b>\n"
    resp = client.get(f"/labs/{lab.slug}/builds/{build.pk}/log/")
    assert resp["Content-Disposition"].startswith("attachment")
    assert 'href="/labs/storage/builds/%d/log/?view=1"' % build.pk in page(client, lab, build)


def test_remote_source_while_offline_is_warned(client_for, users, lab, config, settings):
    from guests import services
    from guests.flake import default_settings

    settings.NIX_OFFLINE = True
    remote = services.configuration_create(lab=lab, name="remote", user=users["operator"],
                                           settings=default_settings(nixos_flake_url="github:linux-kdevops/nixos-flake"))
    client = client_for(users["viewer"])
    assert 'id="offline-warning"' in page(client, lab, make(lab, remote))
    assert 'id="offline-warning"' not in page(client, lab, make(lab, config))


def test_lab_and_home_pages_show_roles_and_last_builds(client_for, users, lab, config):
    build = make(lab, config, status=Status.FAILED, finished=timezone.now())
    client = client_for(users["operator"])
    lab_html = client.get(f"/labs/{lab.slug}/").content.decode()
    assert f'href="/labs/{lab.slug}/builds/{build.pk}/">#{build.pk}</a> <span class="status-failed">Failed</span>' in lab_html
    assert f'action="/labs/{lab.slug}/configs/{config.pk}/r/1/build/"' in lab_html
    home = client.get("/").content.decode()
    assert "your role: operator" in home and f"#{build.pk}</a>" in home
    viewer_home = client_for(users["viewer"]).get("/").content.decode()
    assert "your role: viewer" in viewer_home and "/build/" not in viewer_home


def test_site_admin_link_and_favicon(client_for, users, django_user_model):
    staff = django_user_model.objects.create_user("staffer", password="pw-staff-1", is_staff=True)
    html = client_for(staff).get("/").content.decode()
    assert ">Site admin</a>" in html and 'rel="icon"' in html
    resp = client_for(staff).get("/favicon.ico")
    assert resp.status_code in (301, 302) and resp["Location"].endswith("kdevweb/favicon.svg")


def test_member_changes_say_so(client_for, users, lab):
    from guests.models import Membership

    client = client_for(users["admin"])
    viewer = Membership.objects.get(lab=lab, user=users["viewer"])
    resp = client.post(f"/labs/{lab.slug}/members/{viewer.pk}/role/", {"role": "operator"}, follow=True)
    assert "viewer is now operator in Storage lab." in resp.content.decode()
    resp = client.post(f"/labs/{lab.slug}/members/{viewer.pk}/remove/", follow=True)
    assert "viewer was removed from Storage lab." in resp.content.decode()
    resp = client.post(f"/labs/{lab.slug}/members/add/", {"username": "viewer", "role": "viewer"}, follow=True)
    assert "Added viewer to Storage lab." in resp.content.decode()
