"""The form, fuzzed as a whole: hypothesis picks backend, mode, profiles,
suites, shares, storage, monitoring fields and user names (good and bad
values alike). Every save answers 302 or 400, never a 500; every accepted
configuration evaluates with nix against the stand-in; every refused one
says why on the page."""

import re

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from guests import flake
from guests.evaluate import evaluate
from guests.models import Configuration, Revision
from tests.test_evaluate import form_data

pytestmark = pytest.mark.django_db

def mostly(good, bad):
    """Usually a good value, sometimes a bad one: a few bad fields at a time,
    so that both outcomes (saved and refused) happen often."""
    # (one_of(good, ..., bad) would not weigh the branches; small integers
    # are hypothesis' favourites, hence a middle value for "bad".)
    return st.integers(0, 11).flatmap(lambda i: bad if i == 6 else good)


MOUNTS = mostly(st.sampled_from(["/mnt/src", "/mnt/scratch", "/mnt/results", "/srv/a"]),
                st.sampled_from(["/nix/store", "/", "/mnt/a/", "rel", "/lib", "/mnt/a b"]))
INTS = mostly(st.one_of(st.integers(1, 100), st.just("")), st.one_of(st.integers(-3, 0), st.just(10**12),
                                                                      st.sampled_from(["x", "1.5"])))
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
BOOL = st.sampled_from(["on", ""])


@st.composite
def rows(draw, prefix: str, fields) -> dict:
    n = draw(st.integers(0, 2))
    data = {f"{prefix}-TOTAL_FORMS": str(max(n, 1))}
    for i in range(n):
        for name, strategy in fields.items():
            value = draw(strategy)
            if value is not None:
                data[f"{prefix}-{i}-{name}"] = value
    return data


SHARES = {"mount_point": MOUNTS, "tag": mostly(st.sampled_from(["src", "results"]), st.sampled_from(["bad tag", "x" * 40])),
          "options": st.sampled_from(["", "ro", "ro, noatime", ","])}
STORAGE = {"mount_point": MOUNTS,
           "device": mostly(st.sampled_from(["/dev/vdb", "LABEL=scratch"]), st.sampled_from(["/dev/v db", ""])),
           "fs_type": mostly(st.sampled_from(["xfs", "ext4"]), st.sampled_from(["bad fs", ""])),
           "options": st.sampled_from(["", "noatime"]),
           "mkfs_args": mostly(st.sampled_from(["", "-f", "-m 'reflink=1'"]), st.just("'open")),
           "auto_format": st.sampled_from([None, "on"])}
MONITORING = {
    "mon_output_dir": mostly(st.sampled_from(["", "/var/lib/monitoring/runs/%i", "/mnt/results/%i"]),
                             st.one_of(st.just("/x y"), TEXT)),
    "mon_sysstat": BOOL, "mon_sysstat_interval": INTS, "mon_sysstat_max_samples": INTS, "mon_cpu_governor": BOOL,
    "mon_blkalgn": BOOL, "mon_blkalgn_disk": mostly(st.sampled_from(["", "vdb", "/dev/vdb"]), st.just("v d")),
    "mon_blkalgn_ops": mostly(st.sampled_from(["", "Write", "Read", "ZoneReset"]), st.sampled_from(["write", "Write Read"])),
    "mon_biolatency": BOOL, "mon_bio_ms": BOOL, "mon_bio_queued": BOOL, "mon_bio_per_disk": BOOL,
    "mon_bio_per_flag": BOOL, "mon_bio_disk": st.sampled_from(["", "nvme0n1"]), "mon_bio_interval": INTS,
}


@st.composite
def form_posts(draw) -> dict:
    data = {
        "backend": draw(mostly(st.sampled_from(flake.BACKENDS), st.just("docker"))),
        "mode": draw(st.sampled_from(flake.MODES)),
        "profiles": draw(st.lists(st.sampled_from(flake.PROFILES), unique=True)),
        "test_suites": draw(st.lists(st.sampled_from(flake.TEST_SUITES), unique=True)),
        "user_name": draw(mostly(st.sampled_from(["kdev", "user", "fsgqa"]),
                                 st.sampled_from(["root", "daemon", "nobody", "Bad"]))),
        "state_version": draw(mostly(st.sampled_from(["", "25.11"]), st.just("26.5"))),
        "root_device": draw(mostly(st.just("/dev/sda2"), st.just(""))),
        "root_fs_type": draw(mostly(st.just("ext4"), st.just(""))),
    }
    for name, strategy in MONITORING.items():
        data[name] = draw(strategy)
    data.update(draw(rows("shares", SHARES)))
    data.update(draw(rows("storage", STORAGE)))
    return data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(post=form_posts())
def test_any_form_is_saved_and_evaluates_or_is_refused_with_a_reason(client_for, users, lab, post):
    before = Revision.objects.count()
    name = f"fuzz-{before}"
    data = form_data(name=name, **post)
    resp = client_for(users["operator"]).post(f"/labs/{lab.slug}/configs/new/", data)
    assert resp.status_code in (302, 400)
    event("saved" if resp.status_code == 302 else "refused")
    if resp.status_code == 400:
        assert Revision.objects.count() == before
        reasons = re.findall(r'class="errorlist[^"]*"[^>]*><li>(.*?)</li>', resp.content.decode())
        assert reasons, "a refusal names its reason"
        event(f"refused: {reasons[0][:50]}")
        return
    rev = Configuration.objects.get(lab=lab, name=name).latest
    result = evaluate(rev.files, output=flake.output_name(rev.backend), offline=True)
    assert result.ok, (post, result.error)
