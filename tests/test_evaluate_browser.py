"""The configuration form in Chromium: sections show when they apply, rows
are added in place, the saved revision's verdict arrives without a reload,
and neither page is wider than a 390 px phone."""

import pytest

from guests.models import Configuration
from tests.helpers import STANDIN
from tests.test_browser import login, operator, page, server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


def fits(page, width: int) -> bool:
    page.set_viewport_size({"width": width, "height": 900})
    return page.evaluate("document.documentElement.scrollWidth") <= width


def test_form_sections_rows_and_verdict(page, server, operator, lab, workers):  # noqa: F811
    workers()
    login(page, server)
    page.goto(f"{server}/labs/{lab.slug}/configs/new/")
    assert fits(page, 390) and fits(page, 1366)
    # Options of an unticked profile and of another mode are out of the way.
    assert not page.is_visible("#section-monitoring-profile") and not page.is_visible("#f-root_device")
    page.check("input[name=profiles][value=monitoring]")
    assert page.is_visible("#section-monitoring-profile")
    assert page.is_checked("#id_mon_sysstat") and page.is_checked("#id_mon_bio_ms")  # upstream's defaults
    page.select_option("#id_mode", "baremetal")
    assert page.is_visible("#f-root_device")
    page.select_option("#id_mode", "guest")
    page.fill("#id_name", "in-browser")
    page.fill("#id_nixos_flake_url", f"path:{STANDIN}")
    page.select_option("#id_mon_blkalgn_ops", "Write")
    page.click("#rows-shares button.add-row")
    page.fill("#id_shares-0-mount_point", "/mnt/a")
    page.fill("#id_shares-0-tag", "a")
    page.fill("#id_shares-1-mount_point", "/mnt/b")
    page.fill("#id_shares-1-tag", "b")
    page.click("text=Save revision")
    page.wait_for_selector("#evaluation.eval-ok", timeout=60000)  # swapped in by config_page.js
    assert "Created in-browser r1" in page.inner_text("main")
    settings = Configuration.objects.get(name="in-browser").latest.settings
    assert settings["shares"] == {"/mnt/a": {"tag": "a"}, "/mnt/b": {"tag": "b"}}
    assert settings["monitoring"] == {"enable": True, "blkalgn": {"ops": "Write"}}
    assert fits(page, 390) and fits(page, 1366)
