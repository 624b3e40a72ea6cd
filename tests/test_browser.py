"""Headless Chromium (Debian's, driven by Playwright) against a real daphne,
worker and Redis: log in, create a configuration through the form, see its
flake; build it and watch progress reach `succeeded` with boot.json."""

import re
import uuid

import pytest

from guests.models import Configuration
from tests.helpers import STANDIN
from tests.procs import start_daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def server(tmp_path):
    proc, port = start_daphne(tmp_path / "daphne.log")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    from django.db import connections

    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # in these tests are still plain synchronous ones (Django's documented
    # escape hatch for exactly this case).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            # Playwright's wait_for_function polls with eval(), which the site's
            # CSP forbids; tests/test_security_browser.py checks pages under the CSP.
            context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            pg = context.new_page()
            pg.set_default_timeout(30000)
            yield pg
            browser.close()
        finally:
            # While that loop runs, Django keeps connections per context, not
            # per thread: ORM calls made meanwhile opened a second connection
            # that only code running under the loop can see -- and close. Left
            # open, PostgreSQL refuses to drop the test database.
            connections.close_all()


@pytest.fixture
def operator(settings, django_user_model, lab):
    from guests.models import Membership

    # The server process only knows the default (PBKDF2) hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user = django_user_model.objects.create_user("alice", password="alice-secret-pw")
    Membership.objects.create(lab=lab, user=user, role="operator")
    return user


def login(page, server):
    page.goto(server + "/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-secret-pw")
    page.click("button[type=submit]")
    page.wait_for_url(server + "/")


def test_create_configuration_in_the_browser(page, server, operator, lab):
    login(page, server)
    page.click(f"text={lab.name}")
    page.click("text=New configuration")
    page.fill("#id_name", "browser-guest")
    page.fill("#id_host_name", "browserbox")
    page.fill("#id_user_name", "kdev")
    page.fill("#id_nixos_flake_url", f"path:{STANDIN}")
    page.check("input[name=profiles][value=devel]")
    page.check("input[name=test_suites][value=fstests]")
    page.fill("#id_extra_packages", "fio gdb")
    page.fill("#id_shares-0-mount_point", "/mnt/linux")
    page.fill("#id_shares-0-tag", "linux")
    page.click("text=Save revision")
    page.wait_for_selector("#file-flakenix", state="attached")  # folded: in the page, not shown
    flake = page.text_content("#file-flakenix")
    assert "nixosConfigurations.vm = nixpkgs.lib.nixosSystem" in flake
    assert f'nixos-flake.url = "path:{STANDIN}";' in flake
    assert '"hostName": "browserbox"' in page.text_content("#file-kdevwebjson")
    config = Configuration.objects.get(name="browser-guest")
    assert config.latest.settings["shares"] == {"/mnt/linux": {"tag": "linux"}}  # options only when set


def test_build_in_the_browser(page, server, operator, lab, workers):
    from guests import services
    from tests.helpers import sample_settings

    config = services.configuration_create(lab=lab, name="example-guest", user=operator,
                                           settings=sample_settings(hostName="b" + uuid.uuid4().hex[:12]),
                                           extra_module="{ standin.buildSeconds = 2; }")
    workers()
    login(page, server)
    page.goto(f"{server}/labs/{lab.slug}/configs/{config.pk}/")
    page.click("#build-button")
    page.wait_for_url(re.compile(r".*/builds/\d+/$"))
    # Live: the terminal fills and derivation counters move while it runs.
    page.wait_for_function("window.kdevwebLog && window.kdevwebLog.lines > 2")
    page.wait_for_selector("#status.status-succeeded", timeout=120000)
    page.wait_for_selector("#bootspec")
    spec = page.inner_text("#bootspec")
    for key in ("init", "initrd", "kernel", "kernelParams", "toplevel"):
        assert key in spec
    assert "/init" in spec  # no root=tmpfs: imageless sets no kernelParams, as upstream
    assert page.inner_text("#builds-done") == page.inner_text("#builds-expected") != "0"
    assert "/nix/store/" in page.inner_text("#out-path")
    assert "kdevweb: succeeded" in page.inner_text("#terminal")
    page.screenshot(path=str(server_screenshot_path()))


def server_screenshot_path():
    from django.conf import settings

    return settings.BUILDS_DIR.parent / "build-page.png"
