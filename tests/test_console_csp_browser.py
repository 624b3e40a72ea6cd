"""The console page in Chromium under the site's CSP (no eval, no inline
scripts): xterm.js, the fit and search addons and console.js work, bytes
from a (fake) guest show, keys typed reach it, search finds text."""

import time

import pytest

from tests.test_browser import login, operator, server  # noqa: F401  (fixtures)
from tests.test_console_ws import console  # noqa: F401  (fixture)
from tests.test_security_browser import _violations, _wait, page  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

BUFFER = "window.kdevwebConsole && window.kdevwebConsole.buffer()"


def test_console_page_under_the_csp(page, server, operator, lab, console):  # noqa: F811
    guest, chardev, _ = console
    chardev.echo = False
    violations = _violations(page)
    login(page, server)
    page.goto(f"{server}/labs/{lab.slug}/guests/{guest.pk}/console/?console=ttyS0")
    chardev.emit(b"\x1b[32mcsp-check\x1b[0m line one\r\nline two\r\n")
    _wait(page, f"({BUFFER} || '').includes('csp-check line one')")
    page.click("#terminal")
    page.keyboard.type("typed-in-browser")
    deadline = time.monotonic() + 10
    while b"typed-in-browser" not in chardev.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"typed-in-browser" in chardev.received
    page.fill("#search", "line two")
    page.click("#search-next")
    _wait(page, "window.kdevwebConsole.selection() === 'line two'")  # the search addon selects the match
    assert "alice" in page.text_content("#presence")
    assert violations == []
