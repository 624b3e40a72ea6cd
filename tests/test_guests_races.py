"""Two Start presses at once (two people, a double click): one QEMU request.
Two guests racing for the last of a host's memory budget: one starts.
Same racing harness as tests/test_races.py (threads, own connections, a
pause between each service's check and its write)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from guests import guest_services as gs
from guests.vm_models import Guest, GuestEvent
from tests.guest_helpers import KERNELS, cleanup, fake_build, fake_out_path, make_host, short_dir
from tests.test_races import paused, race

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not KERNELS, reason="needs a Debian kernel in /boot")]


@pytest.fixture
def make(lab, config, users):
    base = short_dir()
    host = make_host("race", base, budget=1024)
    build = fake_build(lab, config.latest, users["operator"], fake_out_path(base / "out"))
    yield dict(lab=lab, build=build, host=host, kernel=host.kernels.get(), user=users["operator"])
    cleanup(base)


def test_two_starts_of_one_guest_make_one_request(monkeypatch, users, make):
    guest = gs.guest_create(name="once", memory_mib=256, **make)
    paused(monkeypatch, Guest, "save")
    results, _ = race(lambda: gs.guest_start(guest=guest, user=users["operator"]),
                      lambda: gs.guest_start(guest=guest, user=users["admin"]))
    refused = [r for r in results if isinstance(r, ValidationError)]
    assert len(refused) == 1 and "already starting" in refused[0].messages[0], results
    assert GuestEvent.objects.filter(guest=guest, kind="start").count() == 1
    assert Guest.objects.get(pk=guest.pk).pending_action == "start"


def test_two_guests_racing_for_the_last_memory(monkeypatch, users, make):
    first = gs.guest_create(name="a", memory_mib=768, **make)
    second = gs.guest_create(name="b", memory_mib=768, **make)
    paused(monkeypatch, Guest, "save")
    results, _ = race(lambda: gs.guest_start(guest=first, user=users["operator"]),
                      lambda: gs.guest_start(guest=second, user=users["operator"]))
    refused = [r for r in results if isinstance(r, ValidationError)]
    assert len(refused) == 1 and "memory budget" in refused[0].messages[0], results
    assert sorted(Guest.objects.values_list("state", flat=True)) == ["defined", "starting"]
