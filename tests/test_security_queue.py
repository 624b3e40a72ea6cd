"""Issue 7: one lab cannot starve another. Waiting builds start in fair
order across labs, at most BUILDS_PER_LAB run per lab, and the queue
position shown is the build's place in that order."""

import pytest

from builds import scheduling, services
from builds.models import Build, Status
from guests import services as guest_services
from tests.helpers import sample_settings

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_labs(lab, config, users):
    other = lab.other
    other_config = guest_services.configuration_create(lab=other, name="other-guest", settings=sample_settings(),
                                                       user=users["outsider"])
    return config, other_config


def _start(config, user, n=1):
    return [services.build_start(revision=config.latest, user=user) for _ in range(n)]


def test_a_lab_with_many_builds_does_not_push_another_back(two_labs, users, settings, client_for):
    settings.BUILDS_PER_LAB = 2
    config, other_config = two_labs
    flood = _start(config, users["operator"], 20)
    late = _start(other_config, users["outsider"])[0]
    # Second in line (after the flood's first), not 21st.
    assert services.queue_position(late) == 2
    assert [services.queue_position(b) for b in flood[:3]] == [1, 3, 4]
    page = client_for(users["outsider"]).get(f"/labs/{late.lab.slug}/builds/{late.pk}/").content.decode()
    assert "position 2 in the queue" in page
    # Workers claim in that order, and the flooding lab never runs more than 2 at once.
    claimed = [scheduling.build_claim(worker="t") for _ in range(4)]
    assert [b.pk if b else None for b in claimed] == [flood[0].pk, late.pk, flood[1].pk, None]
    assert Build.objects.filter(lab=flood[0].lab, status=Status.RUNNING).count() == 2
    page = client_for(users["operator"]).get(f"/labs/{flood[2].lab.slug}/builds/{flood[2].pk}/").content.decode()
    assert "(position 1 in the queue; waits for one of this lab&#x27;s 2 running builds to finish)" in page
    # A slot frees up: the lab's next build may start.
    services.build_finish(build_id=flood[0].pk, status=Status.SUCCEEDED)
    assert scheduling.build_claim(worker="t").pk == flood[2].pk


def test_cancelled_builds_leave_no_gap_and_tokens_are_harmless(two_labs, users, settings):
    config, _ = two_labs
    a, b = _start(config, users["operator"], 2)
    services.build_cancel(build=a)
    assert services.queue_position(b) == 1
    assert scheduling.build_claim(worker="t").pk == b.pk
    assert scheduling.build_claim(worker="t") is None  # a's token finds nothing
