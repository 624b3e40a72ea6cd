"""The shared console end to end: a real TCG guest started by the host
agent, its consoles relayed by `manage.py consolerelay`, two browsers on
the serial console (an operator and a viewer). The operator's echo of a
random token shows in both xterm.js buffers; the viewer's typing has no
effect; closing the viewer's page leaves the operator's live; a reload
shows the scrollback again with the token."""

from __future__ import annotations

import os
import secrets

import pytest

from guests import guest_services, services
from guests.models import Membership
from guests.runtime.virtiofsd import VIRTIOFSD
from tests.guest_helpers import KERNELS, cleanup, fake_build, make_host, short_dir
from tests.helpers import sample_settings
from tests.procs import manage
from tests.test_browser import login, operator, page, server  # noqa: F401  (fixtures)
from tests.test_standin_boot import NIX, build_guest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

BUFFER = "window.kdevwebConsole && window.kdevwebConsole.buffer()"


def _count(pg, text: str) -> int:
    return pg.evaluate(f"({BUFFER} || '').split({text!r}).length - 1")


def _wait_count(pg, text: str, at_least: int, timeout: int = 60000) -> None:
    pg.wait_for_function(f"(({BUFFER}) || '').split({text!r}).length - 1 >= {at_least}", timeout=timeout)


@pytest.mark.skipif(not KERNELS or not NIX or not os.access(VIRTIOFSD, os.X_OK) or os.geteuid() != 0,
                    reason="needs a Debian kernel, nix, virtiofsd and root")
def test_two_browsers_share_the_serial_console(page, server, operator, lab, tmp_path,  # noqa: F811
                                               django_user_model):
    base = short_dir()
    procs = []
    try:
        host = make_host("con", base)
        config = services.configuration_create(lab=lab, name="console-guest", user=operator,
                                               settings=sample_settings(hostName="console-guest"))
        build = fake_build(lab, config.latest, operator, str(build_guest(base / "b", config.latest.settings)))
        guest = guest_services.guest_create(lab=lab, build=build, name="shared", host=host,
                                            kernel=host.kernels.get(), memory_mib=384, vcpus=1, user=operator)
        bob = django_user_model.objects.create_user("bob", password="bob-secret-pw")
        Membership.objects.create(lab=lab, user=bob, role="viewer")
        procs.append(manage(["hostagent", "--host", "con", "--no-probe", "--stop-timeout", "5"],
                            log=tmp_path / "agent.log"))
        procs.append(manage(["consolerelay", "--host", "con"], log=tmp_path / "relay.log"))
        guest_services.guest_start(guest=guest, user=operator)

        login(page, server)
        url = f"{server}/labs/{lab.slug}/guests/{guest.pk}/console/?console=ttyS0"
        page.goto(url)
        _wait_count(page, "]# ", 1, timeout=180000)  # the stand-in's root prompt

        viewer_context = page.context.browser.new_context(viewport={"width": 1000, "height": 800}, bypass_csp=True)
        viewer = viewer_context.new_page()
        viewer.set_default_timeout(30000)
        viewer.goto(server + "/login/")
        viewer.fill("#id_username", "bob")
        viewer.fill("#id_password", "bob-secret-pw")
        viewer.click("button[type=submit]")
        viewer.wait_for_url(server + "/")
        viewer.goto(url)
        _wait_count(viewer, "]# ", 1)
        assert "read-only" in viewer.text_content("#role-note")

        token = "tok-" + secrets.token_hex(5)
        page.click("#terminal")
        page.keyboard.type(f"echo {token}")
        page.keyboard.press("Enter")
        # The command line echoed and the command's output: two each, on both pages.
        _wait_count(page, token, 2)
        _wait_count(viewer, token, 2)
        assert page.evaluate(BUFFER).count(token) == viewer.evaluate(BUFFER).count(token) == 2

        # The viewer types: nothing reaches the guest.
        viewer.click("#terminal")
        viewer.keyboard.type("echo viewer-typed")
        viewer.keyboard.press("Enter")
        page.wait_for_timeout(1500)
        assert _count(page, "viewer-typed") == 0 and _count(viewer, "viewer-typed") == 0
        assert "bob" in page.text_content("#presence")

        # Closing the viewer leaves the operator live.
        viewer_context.close()
        second = "tok-" + secrets.token_hex(5)
        page.click("#terminal")
        page.keyboard.type(f"echo {second}")
        page.keyboard.press("Enter")
        _wait_count(page, second, 2)

        # A reload shows the scrollback again, then live output, nothing lost.
        page.reload()
        _wait_count(page, second, 2)
        assert _count(page, token) == 2
        third = "tok-" + secrets.token_hex(5)
        page.click("#terminal")
        page.keyboard.type(f"echo {third}")
        page.keyboard.press("Enter")
        _wait_count(page, third, 2)
        # Exactly one answer per cursor-position query reached the shell:
        # no stray "R" sequences typed onto the command line.
        assert ";1R" not in page.evaluate(BUFFER)
    finally:
        for proc in procs:
            proc.stop()
        for pid_file in base.rglob("qemu.pid"):
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except (OSError, ValueError):
                pass
        cleanup(base)
