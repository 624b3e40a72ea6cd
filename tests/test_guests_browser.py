"""A guest from the browser: create it on the form, press Start, see
`running` appear without a reload (websocket), shut it down and see
`stopped`. Real daphne, Redis, host agent and QEMU (TCG)."""

from __future__ import annotations

import os

import pytest

from guests import services
from guests.runtime.virtiofsd import VIRTIOFSD
from guests.vm_models import Guest
from tests.guest_helpers import KERNELS, cleanup, fake_build, make_host, short_dir
from tests.helpers import sample_settings
from tests.procs import manage
from tests.test_browser import login, operator, page, server  # noqa: F401  (fixtures)
from tests.test_standin_boot import NIX, build_guest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


@pytest.mark.skipif(not KERNELS or not NIX or not os.access(VIRTIOFSD, os.X_OK) or os.geteuid() != 0,
                    reason="needs a Debian kernel, nix, virtiofsd and root")
def test_start_and_stop_a_guest_in_the_browser(page, server, operator, lab, tmp_path):  # noqa: F811
    base = short_dir()
    agent = None
    try:
        host = make_host("web", base)
        config = services.configuration_create(lab=lab, name="browser-guest", user=operator,
                                               settings=sample_settings(hostName="browser-guest"))
        build = fake_build(lab, config.latest, operator, str(build_guest(base / "b", config.latest.settings)))
        # A short ACPI timeout: the stand-in may still be booting when asked.
        agent = manage(["hostagent", "--host", "web", "--no-probe", "--stop-timeout", "5"],
                       log=tmp_path / "agent.log")
        login(page, server)
        page.goto(f"{server}/labs/{lab.slug}/guests/")
        assert page.is_visible("#no-guests")
        # Someone else creates a guest: its row appears without a reload.
        from guests import guest_services

        other = guest_services.guest_create(lab=lab, build=build, name="someone-elses", host=host,
                                            kernel=host.kernels.get(), memory_mib=256, vcpus=1, user=operator)
        page.wait_for_selector(f'tr[data-guest="{other.pk}"] [data-field=state]:has-text("defined")', timeout=15000)
        assert not page.is_visible("#no-guests")
        page.select_option("#new-build", str(build.pk))
        page.click("#new-guest")
        page.fill("#id_name", "clicked")
        page.fill("#id_memory_mib", "384")
        page.fill("#id_vcpus", "1")
        page.click("#create-guest")
        page.wait_for_url(f"{server}/labs/{lab.slug}/guests/*/")
        guest = Guest.objects.get(name="clicked")
        assert page.text_content("#state") == "defined"
        page.click("#start-button")
        page.wait_for_load_state()
        # From here on no reload: the websocket brings each state.
        page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=60000)
        assert Guest.objects.get(pk=guest.pk).state == "running"
        ssh = page.text_content("[data-field=ssh_port]")
        assert ssh.startswith("127.0.0.1:")
        assert page.is_visible("#stop-button") and not page.is_visible("#start-button")
        page.click("#stop-button")
        page.wait_for_function("document.getElementById('state').textContent === 'stopped'", timeout=60000)
        assert page.is_visible("#start-button")
        assert "shutdown" in page.text_content("#events")
    finally:
        if agent is not None:
            agent.stop()
        for pid_file in base.rglob("qemu.pid"):
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except (OSError, ValueError):
                pass
        cleanup(base)
