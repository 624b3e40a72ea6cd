"""A second build of an unchanged revision is a cache hit, and says so."""

import pytest

from builds import services
from builds.presenters import build_summary
from tests.test_builds import finished, make_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_rebuild_is_already_built_nothing_to_do(users, lab, workers):
    config = make_config(lab, users["operator"])
    workers()
    first = finished(services.build_start(revision=config.latest, user=users["operator"]))
    second = finished(services.build_start(revision=config.latest, user=users["operator"]))
    assert first.status == second.status == "succeeded"
    one, two = build_summary(first), build_summary(second)
    assert not one["cache_hit"] and one["phase"] == "done" and one["counts"]["builds"]["done"] > 0
    assert two["cache_hit"] and two["phase"] == "already built — nothing to do", two["progress"]
    assert two["out_path"] == one["out_path"]
