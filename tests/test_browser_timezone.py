"""Times are shown in the reader's time zone (static/kdevweb/times.js), with
the server's text kept as a tooltip; without JavaScript the server's zone
stays (tests/test_build_history.py)."""

from datetime import datetime, timedelta, timezone

import pytest

from builds.models import Build, Status
from tests.test_browser import login, operator, page, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


def test_times_follow_the_browsers_time_zone(page, server, operator, lab, config):  # noqa: F811
    created = datetime(2026, 3, 14, 21, 50, 7, tzinfo=timezone.utc)
    build = Build.objects.create(lab=lab, revision=config.latest, attr="toplevel", status=Status.SUCCEEDED,
                                 finished=created + timedelta(seconds=42))
    Build.objects.filter(pk=build.pk).update(created=created)
    # India has one offset all year (+05:30): the expected text does not depend on the date.
    context = page.context.browser.new_context(timezone_id="Asia/Kolkata", bypass_csp=True)
    reader = context.new_page()
    reader.set_default_timeout(30000)
    login(reader, server)
    reader.goto(f"{server}/labs/{lab.slug}/builds/")
    cell = reader.locator(f"time[datetime='{created.isoformat()}']").first
    reader.wait_for_function("document.querySelector('time[data-local-text]') !== null")
    text = cell.inner_text()
    assert text.startswith("2026-03-15 03:20:07 "), text
    assert "UTC" not in text, text
    assert cell.get_attribute("title") == "2026-03-14 21:50:07 UTC (server time)"
    context.close()
