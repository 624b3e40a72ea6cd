"""Every configuration the form accepts evaluates with the real `nix eval`
(against the offline stand-in), and each save is evaluated by a worker.

The seven cases are those of issue 6 (none of which evaluated against the
real modules with the first renderer), each made through the form.
"""

import json
import time

import pytest

from guests.evaluate import error_text, eval_argv, evaluate
from guests.models import Configuration, EvalStatus, Revision
from tests.helpers import STANDIN
from tests.test_configurations import browser_defaults

pytestmark = pytest.mark.django_db

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@lab"


def form_data(**overrides) -> dict:
    """The untouched new-configuration form on the stand-in, plus ``overrides``."""
    data = browser_defaults()
    data.update({"name": "guest", "nixos_flake_url": f"path:{STANDIN}"})
    data.update(overrides)
    return data


def errors(resp) -> str:
    """The error messages of a refused form (for assertion messages)."""
    import re

    return " | ".join(re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', resp.content.decode(), re.S)) or "?"


def save(client, lab, **overrides) -> Revision:
    resp = client.post(f"/labs/{lab.slug}/configs/new/", form_data(**overrides))
    assert resp.status_code == 302, errors(resp)
    return Configuration.objects.get(lab=lab, name=overrides.get("name", "guest")).latest


def assert_evaluates(rev: Revision) -> dict:
    result = evaluate(rev.files, output="toplevel" if rev.backend == "imageless" else "image", offline=True)
    assert result.ok, result.error
    assert result.drv_path.startswith("/nix/store/") and result.drv_path.endswith(".drv")
    return json.loads(rev.files["kdevweb.json"])


def nix_config(rev: Revision, attr: str, tmp_path) -> object:
    """``config.<attr>`` of the revision's nixosConfigurations.vm, as nix sees it."""
    import subprocess

    from builds.nixcmd import nix_env
    from guests.flake import write_files

    d = tmp_path / f"r{rev.pk}"
    d.mkdir(exist_ok=True)
    write_files(rev.files, str(d))
    proc = subprocess.run(["nix", "eval", "--offline", "--json", f"path:{d}#nixosConfigurations.vm.config.{attr}"],
                          capture_output=True, text=True, env=nix_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_form_defaults(client_for, users, lab):
    s = assert_evaluates(save(client_for(users["operator"]), lab))
    assert s["shares"] == {} and s["storage"] == {} and s["monitoring"] is None
    assert s["stateVersion"] is None  # the backend's mkDefault decides
    assert "shares" not in json.dumps(s["profiles"])


def test_libvirt_controller(client_for, users, lab):
    s = assert_evaluates(save(client_for(users["operator"]), lab, backend="libvirt", mode="controller"))
    assert s["controller"] is True and s["profiles"] == ["controller"]


def test_controller_on_imageless_is_refused_with_a_reason(client_for, users, lab):
    resp = client_for(users["operator"]).post(f"/labs/{lab.slug}/configs/new/",
                                              form_data(backend="imageless", mode="controller"))
    assert resp.status_code == 400 and "controller mode needs the libvirt backend" in resp.content.decode()


def test_one_share_only(client_for, users, lab):
    s = assert_evaluates(save(client_for(users["operator"]), lab,
                              **{"shares-0-mount_point": "/mnt/src", "shares-0-tag": "linux"}))
    assert s["shares"] == {"/mnt/src": {"tag": "linux"}} and s["storage"] == {}


def test_fstests_with_one_scratch_disk_only(client_for, users, lab):
    s = assert_evaluates(save(client_for(users["operator"]), lab, test_suites=["fstests"],
                              **{"storage-0-mount_point": "/mnt/scratch", "storage-0-device": "/dev/vdb",
                                 "storage-0-fs_type": "xfs"}))
    assert s["storage"] == {"/mnt/scratch": {"device": "/dev/vdb", "fsType": "xfs"}} and s["shares"] == {}


def test_monitoring_profile_with_fields_untouched(client_for, users, lab, tmp_path):
    rev = save(client_for(users["operator"]), lab, profiles=["monitoring"])
    s = assert_evaluates(rev)
    # Upstream's defaults stay upstream's: sysstat and cpuGovernor follow enable, milliseconds is true.
    assert s["monitoring"] == {"enable": True}
    mon = nix_config(rev, "nixos-flake.monitoring", tmp_path)
    assert mon["enable"] and mon["sysstat"]["enable"] and mon["cpuGovernor"]["enable"]
    assert mon["biolatency"]["milliseconds"] and mon["sysstat"]["interval"] == 5
    # ...and stateVersion is the backend's mkDefault, the release.
    assert nix_config(rev, "system.stateVersion", tmp_path) == "26.05"


def test_monitoring_with_blkalgn_on_writes(client_for, users, lab, tmp_path):
    rev = save(client_for(users["operator"]), lab, profiles=["monitoring"], mon_blkalgn="on",
               mon_blkalgn_ops="Write")
    s = assert_evaluates(rev)
    assert s["monitoring"] == {"enable": True, "blkalgn": {"enable": True, "ops": "Write"}}
    assert nix_config(rev, "nixos-flake.monitoring.blkalgn", tmp_path) == {"enable": True, "ops": "Write", "disk": ""}


def test_everything_at_once(client_for, users, lab, tmp_path):
    src = tmp_path / "fio-src"
    src.mkdir()
    (src / "VERSION").write_text("fio-local\n")
    s = assert_evaluates(save(
        client_for(users["operator"]), lab, backend="libvirt", mode="controller",
        profiles=["devel", "build-tools", "monitoring", "controller"], test_suites=list(browser_suites()),
        user_name="kdev", extra_groups="wheel kvm libvirtd", authorized_keys=KEY, host_name="everything",
        extra_packages="fio gdb", state_version="25.11", disk_size_mib="30000", memory_mib="4096",
        mon_sysstat_interval="10", mon_cpu_governor="", mon_blkalgn="on", mon_blkalgn_ops="Write",
        mon_blkalgn_disk="vdb", mon_biolatency="on", mon_bio_per_disk="on", mon_output_dir="/mnt/results/%i",
        extra_module="{ lib, ... }: { networking.hostName = lib.mkForce \"everything\"; }",
        **{"shares-TOTAL_FORMS": "2", "shares-0-mount_point": "/mnt/src", "shares-0-tag": "linux",
           "shares-0-options": "ro", "shares-1-mount_point": "/mnt/results", "shares-1-tag": "results",
           "storage-0-mount_point": "/mnt/scratch", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs",
           "storage-0-mkfs_args": "-f -m reflink=1", "sources-TOTAL_FORMS": "2",
           "sources-0-package": "fio", "sources-0-url": f"path:{src}",
           "sources-1-package": "cpupower", "sources-1-url": f"path:{src}"}))
    assert s["stateVersion"] == "25.11" and s["controller"] is True
    assert s["monitoring"] == {"enable": True, "outputDir": "/mnt/results/%i", "sysstat": {"interval": 10},
                               "cpuGovernor": {"enable": False},
                               "blkalgn": {"enable": True, "disk": "vdb", "ops": "Write"},
                               "biolatency": {"enable": True, "perDisk": True}}
    assert s["sourceOverrides"]["cpupower"]["input"] == "kernel-src"
    assert s["sourceOverrides"]["fio"] == {"url": f"path:{src}", "input": "fio-src", "clearPatches": True}


def browser_suites():
    from guests.flake import TEST_SUITES

    return TEST_SUITES


def test_baremetal_supplies_its_root_file_system(client_for, users, lab, tmp_path):
    client = client_for(users["operator"])
    resp = client.post(f"/labs/{lab.slug}/configs/new/", form_data(mode="baremetal"))
    assert resp.status_code == 400 and "supplies its own root file system" in resp.content.decode()
    rev = save(client, lab, mode="baremetal", root_device="/dev/nvme0n1p2", root_fs_type="xfs")
    s = assert_evaluates(rev)
    assert s["baremetal"] == {"rootDevice": "/dev/nvme0n1p2", "rootFsType": "xfs", "rootOptions": []}
    fs = nix_config(rev, "fileSystems", tmp_path)
    assert (fs["/"]["device"], fs["/"]["fsType"]) == ("/dev/nvme0n1p2", "xfs")  # not the tmpfs root
    assert not fs["/nix/store"]["enable"] and not fs["/lib/modules"]["enable"]  # no virtiofs on real hardware


@pytest.mark.parametrize("overrides,message", [
    ({"user_name": "root"}, "system account"),
    ({"user_name": "fsgqa", "test_suites": ["fstests"]}, "accounts testSuites.fstests creates"),
    ({"user_name": "bin", "test_suites": ["fstests"]}, "accounts testSuites.fstests creates"),
    ({"shares-0-mount_point": "/nix/store", "shares-0-tag": "x"}, "collides with the guest's own /nix/store"),
    ({"shares-0-mount_point": "/lib", "shares-0-tag": "x"}, "collides with the guest's own /lib/modules"),
    ({"storage-0-mount_point": "/", "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs"}, "not a mount point"),
    ({"shares-0-mount_point": "/mnt/a/", "shares-0-tag": "x"}, "trailing slash"),
    ({"shares-0-mount_point": "/mnt/a", "shares-0-tag": "x", "storage-0-mount_point": "/mnt/a",
      "storage-0-device": "/dev/vdb", "storage-0-fs_type": "xfs"}, "also a virtiofs share"),
    ({"sources-TOTAL_FORMS": "2", "sources-0-package": "cpupower", "sources-0-url": "path:/a",
      "sources-1-package": "kernel", "sources-1-url": "path:/b"}, "would both read the input kernel-src"),
    ({"state_version": "26.5"}, "not a NixOS release"),
    ({"profiles": ["monitoring"], "mon_output_dir": "/var/x y"}, "without white space"),
])
def test_configurations_that_cannot_evaluate_are_refused(client_for, users, lab, overrides, message):
    resp = client_for(users["operator"]).post(f"/labs/{lab.slug}/configs/new/", form_data(**overrides))
    assert resp.status_code == 400
    assert message in resp.content.decode().replace("&#x27;", "'"), message
    assert not Configuration.objects.exists()


def test_an_evaluation_error_is_nix_s_message(tmp_path):
    from tests.helpers import sample_settings
    from guests.flake import render_files

    files = render_files(sample_settings(), extra_module='{ ... }: { networking.hostName = throw "kdevweb-eval-probe"; }')
    result = evaluate(files, output="toplevel", offline=True)
    assert not result.ok and "kdevweb-eval-probe" in result.error and "\x1b[" not in result.error
    assert eval_argv(flake_dir="/d", output="image", offline=True) == [
        "nix", "eval", "--offline", "--raw", "path:/d#packages.x86_64-linux.image.drvPath"]
    assert error_text("warning: creating lock file 'x'\n\x1b[31;1merror:\x1b[0m boom") == "error: boom"


def test_evaluation_timeout_is_reported(monkeypatch):
    from tests.helpers import sample_settings
    from guests.flake import render_files

    files = render_files(sample_settings(), extra_module="{ ... }: { networking.hostName = let f = x: f x; in f 1; }")
    started = time.monotonic()
    result = evaluate(files, output="toplevel", offline=True, timeout=3)
    assert not result.ok and time.monotonic() - started < 30
    assert "did not finish within 3 s" in result.error or "infinite recursion" in result.error


@pytest.mark.django_db(transaction=True)
def test_each_save_is_evaluated_by_a_worker(client_for, users, lab, workers):
    workers()
    client = client_for(users["operator"])
    good = save(client, lab, name="good")
    bad = save(client, lab, name="bad",
               extra_module='{ ... }: { networking.hostName = throw "kdevweb-eval-probe"; }')
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        good.refresh_from_db()
        bad.refresh_from_db()
        if EvalStatus.PENDING not in (good.eval_status, bad.eval_status):
            break
        time.sleep(0.3)
    assert good.eval_status == EvalStatus.OK, good.eval_error
    assert good.eval_drv_path.endswith(".drv") and good.eval_finished
    assert bad.eval_status == EvalStatus.ERROR and "kdevweb-eval-probe" in bad.eval_error
    page = client.get(f"/labs/{lab.slug}/configs/{good.configuration_id}/").content.decode()
    assert "Evaluates" in page
    page = client.get(f"/labs/{lab.slug}/configs/{bad.configuration_id}/").content.decode()
    assert "Does not evaluate" in page and "kdevweb-eval-probe" in page
    lab_page = client.get(f"/labs/{lab.slug}/").content.decode()
    assert "does not evaluate" in lab_page


def test_the_job_records_the_verdict_and_a_queue_outage(config, monkeypatch):
    from guests import eval_jobs

    monkeypatch.setattr(eval_jobs, "close_old_connections", lambda: None)  # in-process: keep the test's connection
    rev = config.latest
    assert rev.eval_status == EvalStatus.PENDING  # until its job has run
    assert eval_jobs.revision_evaluate(rev.pk) == EvalStatus.OK
    rev.refresh_from_db()
    assert rev.eval_status == EvalStatus.OK and rev.eval_drv_path.endswith(".drv") and not rev.eval_error
    assert eval_jobs.revision_evaluate(10**9) == "skipped: revision deleted"

    def down():
        raise ConnectionError("connection refused")

    monkeypatch.setattr(eval_jobs, "eval_queue", down)
    eval_jobs.evaluate_enqueue(rev.pk)
    rev.refresh_from_db()
    assert rev.eval_status == EvalStatus.NONE and "queue (Redis) is unreachable" in rev.eval_error
