"""Concurrent requests against the services: two transactions at once, each
in its own thread with its own database connection.

On PostgreSQL the two really overlap (each test checks that they did); on
SQLite the IMMEDIATE transactions serialise them, and the outcome must be
the same. A pause is injected inside the critical section, between the
service's check and its write, so the race is hit every time rather than by
luck.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from guests import services
from guests.models import Lab, Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)

PAUSE = 0.5  # seconds spent inside the critical section by each racer


def race(*calls):
    """Run each call in its own thread (and connection), started together.
    Returns each call's result or the exception it raised, and the seconds
    each took."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    took: list[float] = [0.0] * len(calls)

    def run(i, call):
        try:
            start.wait(10)
            t0 = time.monotonic()
            try:
                results[i] = call()
            except Exception as exc:  # noqa: BLE001 - the outcome is what is tested
                results[i] = exc
            took[i] = time.monotonic() - t0
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racer hung (deadlock?)"
    return results, took


def paused(monkeypatch, cls, name):
    """Make ``cls.name`` sleep before doing its work: the window between a
    service's check and its write."""
    original = getattr(cls, name)

    def slow(self, *args, **kwargs):
        time.sleep(PAUSE)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, slow)


def meet(monkeypatch, manager, name, parties=2):
    """Make ``manager.name`` wait until every racer has reached it (all have
    passed their checks) before writing. Where the database serialises the
    racers (SQLite) the wait times out and the first one goes on alone.
    Returns a list that records whether every racer met there."""
    original = getattr(manager, name)
    barrier = threading.Barrier(parties)
    met: list[bool] = []

    def wait_then(*args, **kwargs):
        try:
            barrier.wait(2)
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return original(*args, **kwargs)

    monkeypatch.setattr(manager, name, wait_then)
    return met


def postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def two_admins(lab, users, django_user_model):
    second = django_user_model.objects.create_user("second-admin", password="pw-second-1")
    Membership.objects.create(lab=lab, user=second, role=Role.ADMIN)
    return [lab.memberships.get(user=users["admin"]), lab.memberships.get(user=second)]


def _demote(membership):
    return lambda: services.member_set_role(membership=membership, role=Role.OPERATOR)


def _remove(membership):
    return lambda: services.member_remove(membership=membership)


@pytest.mark.parametrize("first, second", [(_demote, _demote), (_remove, _remove), (_demote, _remove)],
                         ids=["demote-demote", "remove-remove", "demote-remove"])
def test_two_admins_cannot_both_step_down_at_once(monkeypatch, lab, two_admins, first, second):
    """Each admin demotes or removes the other (or themself) at the same
    moment: one wins, the other is told a lab needs an admin, and the lab
    keeps exactly one."""
    a, b = two_admins
    paused(monkeypatch, Membership, "save")
    paused(monkeypatch, Membership, "delete")
    results, took = race(first(b), second(a))
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], ValidationError), results
    assert "at least one admin" in errors[0].messages[0]
    assert Membership.objects.filter(lab=lab, role=Role.ADMIN).count() == 1
    # Both were in flight together: the loser (which never reaches its own
    # pause) spent that time waiting for the winner's lock (PostgreSQL) or
    # write transaction (SQLite) rather than running after it.
    loser = results.index(errors[0])
    assert took[loser] >= PAUSE / 2, took


def test_demoting_a_member_removed_meanwhile_changes_nothing(lab, users):
    """The view loaded the membership, then another admin removed it: the
    role change reports it, instead of resurrecting or crashing."""
    membership = lab.memberships.get(user=users["operator"])
    Membership.objects.filter(pk=membership.pk).delete()
    with pytest.raises(ValidationError, match="no longer a member"):
        services.member_set_role(membership=membership, role=Role.VIEWER)
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_racing_lab_create_gives_one_lab_and_a_form_error(monkeypatch, users):
    met = meet(monkeypatch, Lab.objects, "create")
    results, _ = race(
        lambda: services.lab_create(name="Race A", slug="race", user=users["admin"]),
        lambda: services.lab_create(name="Race B", slug="race", user=users["operator"]),
    )
    labs = [r for r in results if isinstance(r, Lab)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(labs) == 1 and len(errors) == 1, results
    assert isinstance(errors[0], ValidationError), results
    assert "exists already" in errors[0].messages[0]
    lab = Lab.objects.get(slug="race")
    # The loser left nothing behind: the lab has only the winner as admin.
    assert list(lab.memberships.values_list("role", flat=True)) == [Role.ADMIN]
    if postgres():
        assert met == [True, True], "the two creates did not overlap"


def test_racing_member_add_gives_one_membership_and_a_form_error(monkeypatch, lab, users, django_user_model):
    django_user_model.objects.create_user("newcomer", password="pw-newcomer-1")
    met = meet(monkeypatch, Membership.objects, "create")
    results, _ = race(
        lambda: services.member_add(lab=lab, username="newcomer", role=Role.VIEWER),
        lambda: services.member_add(lab=lab, username="newcomer", role=Role.OPERATOR),
    )
    added = [r for r in results if isinstance(r, Membership)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(added) == 1 and len(errors) == 1, results
    assert isinstance(errors[0], ValidationError), results
    assert "already a member" in errors[0].messages[0]
    assert lab.memberships.filter(user__username="newcomer").count() == 1
    if postgres():
        assert met == [True, True], "the two adds did not overlap"


def test_racing_lab_create_through_the_view_is_a_form_error(monkeypatch, client_for, users):
    """The same race through the web form: a 400 page naming the problem,
    never a 500."""
    from django.test import Client

    meet(monkeypatch, Lab.objects, "create")
    clients = []
    for user in (users["admin"], users["operator"]):
        user.is_staff = True  # may create labs
        user.save()
        c = Client()
        c.force_login(user)
        clients.append(c)
    results, _ = race(*[lambda c=c: c.post("/labs/new/", {"name": "Race", "slug": "race"}) for c in clients])
    assert sorted(r.status_code for r in results) == [302, 400], results
    bad = next(r for r in results if r.status_code == 400)
    assert "exists already" in bad.content.decode()


def test_racing_configuration_create_gives_one_configuration_and_a_form_error(monkeypatch, lab, users):
    from guests.models import Configuration
    from tests.helpers import sample_settings

    met = meet(monkeypatch, Configuration.objects, "create")
    results, _ = race(*[
        lambda: services.configuration_create(lab=lab, name="twin", settings=sample_settings(), user=users["operator"])
        for _ in range(2)
    ])
    made = [r for r in results if isinstance(r, Configuration)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(made) == 1 and len(errors) == 1, results
    assert isinstance(errors[0], ValidationError), results
    assert "already has a configuration named" in errors[0].messages[0]
    config = Configuration.objects.get(lab=lab, name="twin")
    assert list(config.revisions.values_list("number", flat=True)) == [1]
    if postgres():
        assert met == [True, True], "the two creates did not overlap"


def test_two_saves_at_once_get_consecutive_revision_numbers(monkeypatch, config, users):
    from guests.models import Revision
    from tests.helpers import sample_settings

    paused(monkeypatch, Revision, "save")
    results, took = race(*[
        lambda i=i: services.revision_create(configuration=config, settings=sample_settings(), extra_module="",
                                             message=f"save {i}", user=users["operator"])
        for i in range(2)
    ])
    assert all(isinstance(r, Revision) for r in results), results
    assert sorted(r.number for r in results) == [2, 3]
    # The second waited for the first's lock on the configuration.
    assert max(took) >= 1.5 * PAUSE, took
