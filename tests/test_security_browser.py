"""Issue 7 in Chromium: pages work under the Content-Security-Policy (no
inline scripts), and a build log's control sequences do not reach xterm.js
(colours do)."""

import pytest

from builds import logstore
from builds.models import Build, Status
from tests.test_browser import ARGS, CHROMIUM, login, operator, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def page(monkeypatch):
    """Like tests/test_browser.py's page, but honouring the CSP (no
    wait_for_function here: Playwright polls it with eval())."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pg = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            pg.set_default_timeout(30000)
            yield pg
            browser.close()
        finally:
            connections.close_all()


def _wait(pg, expression: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not pg.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _violations(pg):
    found = []
    pg.on("console", lambda msg: found.append(msg.text) if "Content Security Policy" in msg.text else None)
    return found


def test_pages_work_under_the_csp(page, server, operator, lab, config):  # noqa: F811
    violations = _violations(page)
    login(page, server)
    resp = page.goto(f"{server}/labs/{lab.slug}/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    page.goto(f"{server}/labs/{lab.slug}/configs/new/")
    page.goto(f"{server}/labs/{lab.slug}/configs/{config.pk}/")
    page.goto(f"{server}/labs/{lab.slug}/builds/")
    assert violations == []


def test_build_log_escapes_do_not_reach_xterm(page, server, operator, lab, config):  # noqa: F811
    violations = _violations(page)
    build = Build.objects.create(lab=lab, revision=config.latest, created_by=operator, attr="toplevel",
                                 status=Status.FAILED)
    build.workdir.mkdir(parents=True)
    writer = logstore.LogWriter(build.workdir)
    writer.write(["first line stays", "\x1b[1A\x1b[2Kthis tried to erase it",
                  "a \x1b]8;;https://evil.example/\x1b\\disguised\x1b]8;;\x1b\\ link",
                  "\x1b[31mred text\x1b[0m", "\x1b[2J\x1b[Hafter clear"])
    writer.close()
    login(page, server)
    page.goto(f"{server}/labs/{lab.slug}/builds/{build.pk}/")
    _wait(page, "!!(window.kdevwebLog && window.kdevwebLog.lines >= 5)")
    text = page.inner_text("#terminal")
    for line in ("first line stays", "this tried to erase it", "a disguised link", "red text", "after clear"):
        assert line in text, text
    assert page.locator("#terminal a").count() == 0  # no OSC 8 hyperlink
    # The colour survived: xterm's DOM renderer gives the red run a foreground class.
    assert page.locator("#terminal span.xterm-fg-1", has_text="red text").count() == 1
    assert violations == []
