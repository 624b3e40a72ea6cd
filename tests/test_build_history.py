"""Build history: filters, pagination and a constant query count with
10,000 builds; the duration trend; deleting a build."""

import re
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


def test_trend_is_a_chart_with_axes_links_and_percentiles(client_for, users, lab, config):
    now = timezone.now()
    for i, seconds in enumerate((3, 5, 4, 100)):
        Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                             started=now - timedelta(days=4 - i), finished=now - timedelta(days=4 - i) + timedelta(seconds=seconds),
                             progress={"builds": {"done": 2, "expected": 2}})
    failed = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED,
                                  started=now, finished=now + timedelta(seconds=7))
    cached = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                                  started=now, finished=now + timedelta(seconds=1),
                                  progress={"builds": {"done": 0, "expected": 0}})
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/durations/")
    assert resp.status_code == 200
    html = resp.content.decode()
    chart = resp.context["chart"]
    assert chart.counts == {"ok": 4, "failed": 1, "cached": 1}
    # Median and p95 of the successful, non-cached builds (3, 4, 5, 100 s).
    assert chart.median[1] == "4.5 s" and chart.p95[1] == "1 min 26 s"
    assert "median 4.5 s" in html and 'class="dot-failed"' in html and 'class="dot-cached"' in html
    # Dates on the time axis, seconds on the duration axis, each point a link.
    labels = [label for _, label in chart.x_ticks]
    assert (now - timedelta(days=3)).strftime("%Y-%m-%d") in labels  # ticks on midnights
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", label) for label in labels)
    assert any(label.endswith(" s") or "min" in label for _, label in chart.y_ticks)
    assert f'href="/labs/{lab.slug}/builds/{failed.pk}/"' in html
    cached_dot = next(d for d in chart.dots if d.url.endswith(f"/{cached.pk}/"))
    assert cached_dot.y == chart.lane and "not a build time" in cached_dot.title


def test_trend_without_builds(client_for, users, lab, config):
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/durations/")
    assert resp.status_code == 200 and "No finished builds yet" in resp.content.decode()


def test_delete_removes_row_and_workdir(client_for, users, lab, config):
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.QUEUED)
    build.workdir.mkdir(parents=True)
    client = client_for(users["operator"])
    client.post(f"/labs/{lab.slug}/builds/{build.pk}/delete/", {"confirm": "yes"})
    assert Build.objects.filter(pk=build.pk).exists(), "an active build is not deleted"
    Build.objects.filter(pk=build.pk).update(status=Status.FAILED)
    # The first POST only asks: a confirmation page, nothing deleted.
    resp = client.post(f"/labs/{lab.slug}/builds/{build.pk}/delete/")
    assert resp.status_code == 200 and 'name="confirm" value="yes"' in resp.content.decode()
    assert Build.objects.filter(pk=build.pk).exists() and build.workdir.exists()
    resp = client.post(f"/labs/{lab.slug}/builds/{build.pk}/delete/", {"confirm": "yes"}, follow=True)
    assert resp.redirect_chain[-1][0] == f"/labs/{lab.slug}/builds/"
    assert not Build.objects.filter(pk=build.pk).exists()
    assert f"Build #{build.pk} deleted" in resp.content.decode()
    assert not build.workdir.exists()


def test_compare_without_outputs_says_so(client_for, users, lab, config):
    a = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    b = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    client = client_for(users["viewer"])
    resp = client.get(f"/labs/{lab.slug}/builds/compare/?a={a.pk}&b={b.pk}")
    assert resp.status_code == 200 and "need an output" in resp.content.decode()


@pytest.mark.parametrize("query,message", [
    ("", "pick one build in column a and another in column b"),
    ("a={a}", "pick one build in column a and another in column b"),
    ("a={a}&b=x", "must be build numbers"),
    ("a={a}&b={a}", "two different builds"),
    ("a={a}&b=99999", "No build #99999 in Storage lab"),
    ("a=99998&b=99999", "No build #99998 or #99999 in Storage lab"),
])
def test_compare_explains_bad_input_on_the_history_page(client_for, users, lab, config, query, message):
    a = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.FAILED)
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/compare/?" + query.format(a=a.pk))
    html = resp.content.decode()
    assert resp.status_code == 400 and resp.templates[0].name == "builds/list.html"
    assert message in html and 'id="compare-error"' in html and "<header>" in html
    assert f'href="/labs/{lab.slug}/builds/{a.pk}/"' in html, "the history is still there to pick from"


def test_who_matches_part_of_the_name_in_any_case(client_for, users, lab, config):
    Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", created_by=users["admin"])
    Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", created_by=users["operator"])
    client = client_for(users["viewer"])
    for who, expected in (("adm", 1), ("LabAdmin", 1), ("OPER", 1), ("a", 2), ("nobody", 0)):
        resp = client.get(f"/labs/{lab.slug}/builds/?who={who}")
        assert resp.status_code == 200 and resp.context["page"].paginator.count == expected, who


def test_history_rows_are_readable(client_for, users, lab, config):
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", created_by=users["admin"],
                                 status=Status.SUCCEEDED, started=timezone.now(),
                                 finished=timezone.now() + timedelta(seconds=42))
    html = client_for(users["viewer"]).get(f"/labs/{lab.slug}/builds/").content.decode()
    # Readable filter choices, with labels.
    assert '<option value="" selected>any configuration</option>' in html
    assert '<option value="" selected>any status</option>' in html and ">Succeeded</option>" in html
    assert '<label for="id_who">Started by:</label>' in html
    # Configuration and revision as links; times absolute with zone and relative.
    assert f'href="/labs/{lab.slug}/configs/{config.pk}/">xfs-guest</a>' in html
    assert f'href="/labs/{lab.slug}/configs/{config.pk}/r/1/">r1</a>' in html
    assert build.created.strftime("%Y-%m-%d") in html and " UTC</time>" in html and "(just now)" in html
    assert "42.0 s" in html


def test_build_states_feed_running_rows(client_for, users, lab, config):
    running = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.RUNNING)
    done = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED)
    other = Build.objects.create(lab=lab.other, revision=config.latest, attr="toplevel", status=Status.RUNNING)
    client = client_for(users["viewer"])
    html = client.get(f"/labs/{lab.slug}/builds/").content.decode()
    assert f'data-build="{running.pk}" data-active="1"' in html and f'data-build="{done.pk}">' in html
    states = client.get(f"/labs/{lab.slug}/builds/states/?ids={running.pk},{done.pk},{other.pk}").json()["builds"]
    assert set(states) == {str(running.pk), str(done.pk)}, "another lab's builds are not shown"
    assert states[str(done.pk)]["terminal"] and states[str(done.pk)]["label"] == "Succeeded"
    assert client.get(f"/labs/{lab.slug}/builds/states/?ids=1,x").status_code == 400


def test_chart_ticks_are_round_times_and_durations():
    from datetime import datetime, timezone as tz

    from builds import charts

    t0 = datetime(2026, 3, 1, 10, 7, tzinfo=tz.utc)
    points = [charts.Point(t=t0 + timedelta(minutes=20 * i), seconds=s, ok=True, cache_hit=False, url="/", label="#")
              for i, s in enumerate((70, 95, 130))]
    chart = charts.duration_chart(points)
    assert [label for _, label in chart.x_ticks] == ["10:15", "10:30", "10:45"]
    assert [label for _, label in chart.y_ticks] == ["0 s", "30 s", "1 min", "1 min 30 s", "2 min", "2 min 30 s"]
    assert charts.percentile([1, 2, 3, 4], 0.5) == 2.5 and charts.percentile([5], 0.95) == 5
