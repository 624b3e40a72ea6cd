"""Configurations through the browser's forms: create, bad input, revisions,
diff, download, clone."""

import html
import io
import json
import re
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from builds.nixcmd import nix_env
from guests.models import Configuration, Revision

from tests.helpers import STANDIN

pytestmark = pytest.mark.django_db


def browser_defaults() -> dict:
    """What a browser posts for the untouched new-configuration form: every
    field's initial value (checkboxes only when ticked)."""
    from guests.forms import ConfigurationForm

    data = {}
    form = ConfigurationForm()
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list) or value is None and hasattr(form.fields[name], "_choices") \
                and form.fields[name].widget.allow_multiple_selected:
            data[name] = value or []
        else:
            data[name] = "" if value is None else str(value)
    for prefix in ("shares", "storage", "sources"):
        data.update({f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0",
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "64"})
    return data


def post_data(**overrides) -> dict:
    data = browser_defaults()
    data.update({
        "name": "ext4-guest",
        "host_name": "kdev",
        "user_name": "kdev",
        "authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@lab",
        "profiles": ["devel"],
        "test_suites": ["fstests", "blktests"],
        "extra_packages": "fio python3Packages.pytest",
        "nixos_flake_url": f"path:{STANDIN}",
    })
    data.update(overrides)
    return data


def create(client, lab, **overrides):
    return client.post(f"/labs/{lab.slug}/configs/new/", post_data(**overrides))


def test_create_renders_a_revision(client_for, users, lab):
    resp = create(client_for(users["operator"]), lab,
                  **{"shares-0-mount_point": "/mnt/src", "shares-0-tag": "linux", "shares-0-options": "ro",
                     "storage-0-mount_point": "/mnt/scratch", "storage-0-device": "/dev/vdb",
                     "storage-0-fs_type": "xfs", "storage-0-mkfs_args": "-f -m 'reflink=1'",
                     "sources-0-package": "xfsprogs", "sources-0-url": "git+file:/srv/xfsprogs",
                     "profiles": ["devel", "monitoring"], "mon_sysstat_interval": "10"})
    assert resp.status_code == 302, resp.content.decode()[:3000]
    config = Configuration.objects.get(lab=lab, name="ext4-guest")
    rev = config.latest
    assert rev.number == 1 and rev.created_by == users["operator"]
    s = json.loads(rev.files["kdevweb.json"])
    assert s["testSuites"] == ["blktests", "fstests"]
    assert s["extraPackages"] == [["fio"], ["python3Packages", "pytest"]]
    assert s["shares"] == {"/mnt/src": {"tag": "linux", "options": ["ro"]}}
    assert s["storage"]["/mnt/scratch"]["mkfsArgs"] == ["-f", "-m", "reflink=1"]
    # Only what differs from upstream's defaults is written.
    assert s["monitoring"] == {"enable": True, "sysstat": {"interval": 10}}
    assert '"xfsprogs-src" = { url = "git+file:/srv/xfsprogs"; flake = false; };' in rev.files["flake.nix"]
    page = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/")
    assert b"nixosConfigurations.vm" in page.content


BAD_INPUTS = [
    ({"name": ""}, "This field is required"),
    ({"backend": "docker"}, "Select a valid choice"),
    ({"mode": "cloud"}, "Select a valid choice"),
    ({"mode": "baremetal", "backend": "libvirt"}, "choose the imageless backend"),
    ({"host_name": "bad host"}, "host name"),
    ({"host_name": "-lead"}, "host name"),
    ({"host_name": "a.b"}, "no dots"),
    ({"user_name": "Root"}, "not a valid user"),
    ({"extra_groups": "wheel B@d"}, "not a valid user or group"),
    ({"authorized_keys": "ok\x00key"}, "Null characters are not allowed"),
    ({"authorized_keys": "ssh-rsa notakey me@laptop"}, "Line 1 (“ssh-rsa notakey me@laptop”) has a key that is not valid base64"),
    ({"authorized_keys": "# mine\n\nhello world"}, "Line 3 (“hello world”) does not start with a known key type"),
    ({"authorized_keys": "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"},
     "says ssh-rsa but its key data is a ssh-ed25519"),
    ({"profiles": ["gaming"]}, "Select a valid choice"),
    ({"profiles": ["controller"]}, "needs mode controller"),
    ({"test_suites": ["xfstests"]}, "Select a valid choice"),
    ({"extra_packages": "fio ${evil}"}, "not a package attribute path"),
    ({"extra_packages": "pkgs..x"}, "not a package attribute path"),
    ({"memory_mib": "12"}, "greater than or equal to 256"),
    ({"memory_mib": "lots"}, "Enter a whole number"),
    ({"vcpus": "0"}, "greater than or equal to 1"),
    ({"disk_size_mib": "-5"}, "greater than or equal to 1024"),
    ({"nixos_flake_url": "ftp://x"}, "not a flake URL"),
    ({"nixos_flake_url": 'path:/x"; evil = "'}, "not a flake URL"),
    ({"nixos_flake_url": "path:/x${y}"}, "not a flake URL"),
    ({"mon_sysstat_interval": "0"}, "greater than or equal to 1"),
    ({"mon_sysstat_max_samples": "x"}, "Enter a whole number"),
    ({"mon_bio_interval": "0"}, "greater than or equal to 1"),
    ({"extra_module": "{ broken = ; }"}, "not valid Nix"),
    ({"shares-0-mount_point": "relative", "shares-0-tag": "t"}, "not a mount point"),
    ({"shares-0-mount_point": "/mnt/../etc", "shares-0-tag": "t"}, "not a mount point"),
    ({"shares-0-mount_point": "/mnt/a", "shares-0-tag": "bad tag"}, "not a virtiofs tag"),
    ({"shares-0-mount_point": "/mnt/a", "shares-0-tag": "x" * 37}, "at most 36"),
    ({"storage-0-mount_point": "/mnt/s", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "x fs"},
     "not a file system type"),
    ({"storage-0-mount_point": "/mnt/s", "storage-0-device": "/dev/v db", "storage-0-fs_type": "xfs"},
     "no white space"),
    ({"storage-0-mount_point": "/mnt/s", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs",
      "storage-0-mkfs_args": "-f", "storage-0-auto_format": "on"}, "not both"),
    ({"storage-0-mount_point": "/mnt/s", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs",
      "storage-0-mkfs_args": "-L 'unterminated"}, "Cannot split"),
    ({"storage-0-mount_point": "/mnt/s"}, "This field is required"),
    ({"sources-0-package": "linux kernel", "sources-0-url": "github:torvalds/linux"}, "not a package attribute"),
    ({"sources-0-package": "linux", "sources-0-url": "javascript:alert(1)"}, "not a flake URL"),
    ({"shares-TOTAL_FORMS": "2", "shares-0-mount_point": "/mnt/a", "shares-0-tag": "a",
      "shares-1-mount_point": "/mnt/a", "shares-1-tag": "b"}, "appears twice"),
    ({"shares-TOTAL_FORMS": "x"}, "ManagementForm data is missing or has been tampered with"),
    ({"message": "x" * 201}, "at most 200 characters"),
    ({"mon_output_dir": "/var/\x00x"}, "Null characters are not allowed"),
    ({"mon_blkalgn_disk": "\x00"}, "Null characters are not allowed"),
    ({"mon_blkalgn_ops": "read"}, "Select a valid choice"),
    ({"mon_bio_disk": "vd\x00a"}, "Null characters are not allowed"),
    ({"shares-0-mount_point": "/mnt/a", "shares-0-tag": "a", "shares-0-options": "ro\x00"},
     "Null characters are not allowed"),
    ({"storage-0-mount_point": "/mnt/s", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs",
      "storage-0-options": "\x00"}, "Null characters are not allowed"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[repr(o)[:60] for o, _ in BAD_INPUTS])
def test_bad_input_is_refused_and_nothing_saved(client_for, users, lab, overrides, message):
    before = (Configuration.objects.count(), Revision.objects.count())
    resp = create(client_for(users["operator"]), lab, **overrides)
    assert resp.status_code == 400
    assert message in resp.content.decode().replace("&#x27;", "'"), message
    assert (Configuration.objects.count(), Revision.objects.count()) == before


def test_duplicate_name_is_a_form_error(client_for, users, lab, config):
    resp = create(client_for(users["operator"]), lab, name=config.name)
    assert resp.status_code == 400 and "already has a configuration named" in resp.content.decode()
    assert Configuration.objects.filter(lab=lab).count() == 1


def test_edit_creates_revisions_and_diff_shows_change(client_for, users, lab, config):
    client = client_for(users["operator"])
    url = f"/labs/{lab.slug}/configs/{config.pk}/"
    form_page = client.get(url + "edit/")
    assert form_page.status_code == 200 and b'value="kdev"' in form_page.content
    resp = client.post(url + "edit/", post_data(name=config.name, host_name="xfs-box", message="rename host"))
    assert resp.status_code == 302
    config.refresh_from_db()
    assert list(config.revisions.values_list("number", flat=True)) == [2, 1]
    assert Revision.objects.get(configuration=config, number=1).settings["hostName"] == "kdev"
    diff = html.unescape(client.get(url + "diff/?a=1&b=2").content.decode())
    assert '-  "hostName": "kdev",' in diff and '+  "hostName": "xfs-box",' in diff
    # Bad diff input is explained on the configuration page, in the layout (issue 9).
    bad = client.get(url + "diff/", follow=True)
    assert bad.redirect_chain[-1][0] == url and "Pick two revisions to compare (a and b)." in bad.content.decode()
    bad = client.get(url + "diff/?a=1&b=x", follow=True)
    assert "Pick two revisions to compare" in bad.content.decode()
    bad = client.get(url + "diff/?a=1&b=99", follow=True)
    assert bad.redirect_chain and f"{config.name} has no revision 99." in bad.content.decode()
    assert client.get(url + "r/1/").status_code == 200


def test_revisions_are_immutable(config):
    rev = config.latest
    rev.message = "changed"
    with pytest.raises(ValueError):
        rev.save()


def test_download_is_a_buildable_archive(client_for, users, lab, config, tmp_path):
    resp = client_for(users["viewer"]).get(f"/labs/{lab.slug}/configs/{config.pk}/r/1/download/")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        names = sorted(tar.getnames())
        # filter= exists from Python 3.11.4 (Debian 12 has 3.11.2).
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    assert names == ["xfs-guest-r1/default.nix", "xfs-guest-r1/flake.nix", "xfs-guest-r1/kdevweb.json"]
    # What a user would do by hand with it: plain `nix build`.
    proc = subprocess.run(["nix", "build", "--offline", "path:.#toplevel"], cwd=tmp_path / "xfs-guest-r1",
                          capture_output=True, text=True, env=nix_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "xfs-guest-r1" / "result" / "boot.json").exists()


def test_clone(client_for, users, lab, config):
    client = client_for(users["operator"])
    resp = client.post(f"/labs/{lab.slug}/configs/{config.pk}/clone/", {"name": "xfs-guest-2"})
    clone = Configuration.objects.get(name="xfs-guest-2")
    assert "Cloned xfs-guest r1 as xfs-guest-2" in client.get(resp.url).content.decode()
    assert resp.status_code == 302 and clone.cloned_from == config.latest
    assert clone.latest.settings == config.latest.settings
    # A clash is a message, not a 500, and creates nothing.
    client.post(f"/labs/{lab.slug}/configs/{config.pk}/clone/", {"name": "xfs-guest-2"})
    assert Configuration.objects.filter(name="xfs-guest-2").count() == 1
    page = client.get(f"/labs/{lab.slug}/configs/{clone.pk}/").content.decode()
    header = page[page.index("</h1>"):page.index("</p>", page.index("</h1>"))]
    assert header.count("cloned from") == 1 and "clone of" not in header


def test_a_save_that_changes_nothing_is_refused(client_for, users, lab):
    client = client_for(users["operator"])
    resp = create(client, lab)
    assert resp.status_code == 302
    assert "Created ext4-guest r1" in client.get(resp.url).content.decode()  # the message after save
    config = Configuration.objects.get(name="ext4-guest")
    url = f"/labs/{lab.slug}/configs/{config.pk}/edit/"
    resp = client.post(url, post_data(message="again"))
    assert resp.status_code == 400 and "Nothing changed: r1 already has exactly these settings" in resp.content.decode()
    assert config.revisions.count() == 1
    resp = client.post(url, post_data(host_name="other"), follow=True)
    assert config.revisions.count() == 2 and "Saved r2" in resp.content.decode()


def test_old_revision_offers_restore(client_for, users, lab):
    client = client_for(users["operator"])
    create(client, lab, host_name="first")
    config = Configuration.objects.get(name="ext4-guest")
    base = f"/labs/{lab.slug}/configs/{config.pk}/"
    client.post(base + "edit/", post_data(host_name="second"))
    assert "restore" not in client.get(base).content.decode().lower()
    old = client.get(base + "r/1/").content.decode()
    assert "This is an old revision" in old and f'href="{base}edit/?from=1"' in old
    form = client.get(base + "edit/?from=1").content.decode()
    assert 'value="first"' in form and "Starting from r1" in form and 'value="restore r1"' in form
    client.post(base + "edit/", post_data(host_name="first", message="restore r1"))
    assert config.latest.number == 3 and config.latest.settings == config.revisions.get(number=1).settings
    assert client.get(base + "edit/?from=99").status_code == 404


def test_schema_1_revisions_keep_their_files_and_resave_the_new_way(client_for, users, lab):
    """A revision saved by the first renderer: its stored files never change;
    editing it upgrades the settings, and saving renders the current way."""
    from guests import services
    from tests.helpers import sample_settings

    old = sample_settings(stateVersion="26.05", profiles=["monitoring"], monitoring={
        "enable": True, "outputDir": "/var/lib/monitoring/runs/%i",
        "sysstat": {"enable": False, "interval": 5}, "cpuGovernor": {"enable": False},
        "blkalgn": {"enable": False, "ops": ["Write"]},
        "biolatency": {"enable": False, "milliseconds": False, "queued": False, "perDisk": False,
                       "perFlag": False, "interval": 30}})
    del old["schema"], old["baremetal"]
    config = services.configuration_create(lab=lab, name="legacy", settings=old, user=users["operator"])
    rev = config.latest
    Revision.objects.filter(pk=rev.pk).update(files={**rev.files, "default.nix": "# the old default.nix\n"})
    client = client_for(users["operator"])
    base = f"/labs/{lab.slug}/configs/{config.pk}/"
    assert "Rendered by kdevweb's first renderer" in client.get(base).content.decode().replace("&#x27;", "'")
    form = client.get(base + "edit/").content.decode()
    # Untouched booleans of the old form (false) are upstream's defaults again.
    assert re.search(r'<input type="checkbox" name="mon_sysstat"[^>]* checked>', form)
    assert '<option value="Write" selected>' in form
    data = post_data(name="legacy", profiles=["monitoring"], mon_blkalgn_ops="Write", test_suites=[],
                     extra_packages="", authorized_keys="")
    resp = client.post(base + "edit/", data)
    assert resp.status_code == 302, resp.content.decode()[-2000:]
    assert Revision.objects.get(pk=rev.pk).files["default.nix"] == "# the old default.nix\n"
    assert "first renderer" not in client.get(base).content.decode()
    new = json.loads(config.latest.files["kdevweb.json"])
    assert new["schema"] == 2 and new["stateVersion"] is None
    assert new["monitoring"] == {"enable": True, "blkalgn": {"ops": "Write"}}


def test_members_and_roles(client_for, users, lab):
    client = client_for(users["admin"])
    from guests.models import Membership

    resp = client.post(f"/labs/{lab.slug}/members/add/", {"username": "nobody", "role": "viewer"})
    assert resp.status_code == 400 and "Could not add" in resp.content.decode()
    resp = client.post(f"/labs/{lab.slug}/members/add/", {"username": "viewer", "role": "viewer"})
    assert resp.status_code == 400 and "Could not add" in resp.content.decode()
    m = Membership.objects.get(lab=lab, user=users["viewer"])
    client.post(f"/labs/{lab.slug}/members/{m.pk}/role/", {"role": "operator"})
    m.refresh_from_db()
    assert m.role == "operator"
    assert client.post(f"/labs/{lab.slug}/members/{m.pk}/role/", {"role": "god"}).status_code == 400
    me = Membership.objects.get(lab=lab, user=users["admin"])
    client.post(f"/labs/{lab.slug}/members/{me.pk}/remove/")
    assert Membership.objects.filter(pk=me.pk).exists(), "the last admin must stay"


def test_create_lab(client_for, users):
    users["viewer"].is_staff = True  # creating labs is for staff (tests/test_security.py)
    users["viewer"].save()
    client = client_for(users["viewer"])
    resp = client.post("/labs/new/", {"name": "Mine", "slug": "mine"})
    assert resp.status_code == 302
    resp = client.post("/labs/new/", {"name": "Again", "slug": "mine"})
    assert resp.status_code == 400 and "exists already" in resp.content.decode()
    assert client.post("/labs/new/", {"name": "x", "slug": "bad slug"}).status_code == 400


def test_clone_needs_a_name(client_for, users, lab, config):
    resp = client_for(users["operator"]).post(f"/labs/{lab.slug}/configs/{config.pk}/clone/", {"name": " "},
                                              follow=True)
    assert "Give the clone a name" in resp.content.decode()
    assert Configuration.objects.filter(lab=lab).count() == 1


FIELDS = [k for k in post_data() if not k.endswith("_FORMS")] + [
    "shares-0-mount_point", "shares-0-tag", "shares-0-options", "storage-0-mount_point", "storage-0-device",
    "storage-0-fs_type", "storage-0-options", "storage-0-mkfs_args", "sources-0-package", "sources-0-url"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=st.text(max_size=60))
def test_any_value_in_any_field_is_saved_or_refused_never_a_500(client_for, users, lab, field, value):
    before = Revision.objects.count()
    values = {"name": f"fuzz-{Revision.objects.count()}", field: value}
    resp = create(client_for(users["operator"]), lab, **values)
    assert resp.status_code in (302, 400)
    assert Revision.objects.count() == before + (resp.status_code == 302)


def test_edit_keeps_rows_and_an_emptied_row_is_removed(client_for, users, lab):
    client = client_for(users["operator"])
    rows = {"shares-TOTAL_FORMS": "2", "shares-INITIAL_FORMS": "2", "shares-0-mount_point": "/mnt/a",
            "shares-0-tag": "a", "shares-1-mount_point": "/mnt/b", "shares-1-tag": "b"}
    assert create(client, lab, **rows).status_code == 302
    config = Configuration.objects.get(name="ext4-guest")
    edit = f"/labs/{lab.slug}/configs/{config.pk}/edit/"
    page = client.get(edit).content.decode()
    assert 'value="/mnt/a"' in page and 'value="/mnt/b"' in page
    resp = client.post(edit, post_data(**{**rows, "shares-1-mount_point": "", "shares-1-tag": ""}))
    assert resp.status_code == 302
    assert config.latest.settings["shares"] == {"/mnt/a": {"tag": "a"}}
    resp = client.post(edit, post_data(**{**rows, "shares-0-DELETE": "on", "host_name": "x"}))
    assert resp.status_code == 302 and config.latest.settings["shares"] == {"/mnt/b": {"tag": "b"}}


def test_first_configuration_defaults_to_a_source_that_builds_offline(client_for, users, lab, settings):
    """Issue 9: a new configuration's prefilled source builds on an offline
    instance (the stand-in); a remote one is warned about on the form and after saving."""
    from django.conf import settings as live

    assert live.NIX_OFFLINE and live.DEFAULT_NIXOS_FLAKE.startswith("path:")
    assert live.DEFAULT_NIXOS_FLAKE.endswith("examples/nixos-flake-standin")
    client = client_for(users["operator"])
    page = client.get(f"/labs/{lab.slug}/configs/new/").content.decode()
    assert f'value="{live.DEFAULT_NIXOS_FLAKE}"' in page and "runs Nix offline" in page
    resp = client.post(f"/labs/{lab.slug}/configs/new/",
                       post_data(name="remote-one", nixos_flake_url="github:linux-kdevops/nixos-flake"), follow=True)
    assert resp.status_code == 200
    assert "github:linux-kdevops/nixos-flake cannot be fetched" in resp.content.decode()
