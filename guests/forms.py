"""The configuration form: every option of ../shared/reference/nixos-flake.md.

`ConfigurationEditor` bundles the main form and its three formsets (shares,
storage mounts, package source overrides) and turns them into the
normalised settings dict that `guests.flake.render_files` renders, and back.
"""

from typing import Any

from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from . import flake
from . import validators as v
from .models import Role

MONITORING_DEFAULT_OUTPUT = "/var/lib/monitoring/runs/%i"


class LabForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(max_length=50, help_text="Short name used in URLs.")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ConfigurationForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Unique within the lab.")
    message = forms.CharField(max_length=200, required=False, label="Revision note")
    backend = forms.ChoiceField(choices=[(b, b) for b in flake.BACKENDS], initial="imageless")
    mode = forms.ChoiceField(
        choices=[(m, m) for m in flake.MODES],
        initial="guest",
        help_text="baremetal activates the imageless closure on a real machine; controller adds "
        "profiles.controller and nixos-flake.controller.enable.",
    )
    host_name = forms.CharField(max_length=63, initial="kdev", validators=[v.validate_hostname])
    user_name = forms.CharField(max_length=32, initial="user", validators=[v.validate_username])
    extra_groups = forms.CharField(
        required=False,
        help_text="Space separated. Empty keeps the backend default (wheel kvm, plus libvirtd on libvirt).",
    )
    authorized_keys = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="SSH public keys, one per line."
    )
    profiles = forms.MultipleChoiceField(
        required=False, choices=[(p, p) for p in flake.PROFILES], widget=forms.CheckboxSelectMultiple
    )
    test_suites = forms.MultipleChoiceField(
        required=False, choices=[(t, t) for t in flake.TEST_SUITES], widget=forms.CheckboxSelectMultiple
    )
    extra_packages = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Package attribute paths, e.g. fio gdb python3Packages.pytest.",
    )
    memory_mib = forms.IntegerField(label="Memory (MiB)", initial=2048, min_value=256, max_value=1048576)
    vcpus = forms.IntegerField(label="vCPUs", initial=2, min_value=1, max_value=256)
    disk_size_mib = forms.IntegerField(
        label="Disk size (MiB, libvirt image)", initial=20480, min_value=1024, max_value=16777216
    )
    nixos_flake_url = forms.CharField(
        label="nixos-flake source",
        max_length=500,
        validators=[v.validate_nixos_flake_url],
        help_text="github:, path: or git+file: flake reference.",
    )
    # Monitoring profile options (nixos-flake.monitoring.*).
    mon_output_dir = forms.CharField(required=False, initial=MONITORING_DEFAULT_OUTPUT, label="outputDir")
    mon_sysstat = forms.BooleanField(required=False, label="sysstat.enable")
    mon_sysstat_interval = forms.IntegerField(initial=5, min_value=1, max_value=86400, label="sysstat.interval")
    mon_sysstat_max_samples = forms.IntegerField(
        required=False, min_value=1, max_value=10**9, label="sysstat.maxSamples"
    )
    mon_cpu_governor = forms.BooleanField(required=False, label="cpuGovernor.enable")
    mon_blkalgn = forms.BooleanField(required=False, label="blkalgn.enable")
    mon_blkalgn_disk = forms.CharField(required=False, label="blkalgn.disk")
    mon_blkalgn_ops = forms.CharField(required=False, label="blkalgn.ops", help_text="Space separated.")
    mon_biolatency = forms.BooleanField(required=False, label="biolatency.enable")
    mon_bio_ms = forms.BooleanField(required=False, label="biolatency.milliseconds")
    mon_bio_queued = forms.BooleanField(required=False, label="biolatency.queued")
    mon_bio_per_disk = forms.BooleanField(required=False, label="biolatency.perDisk")
    mon_bio_per_flag = forms.BooleanField(required=False, label="biolatency.perFlag")
    mon_bio_disk = forms.CharField(required=False, label="biolatency.disk")
    mon_bio_interval = forms.IntegerField(initial=30, min_value=1, max_value=86400, label="biolatency.interval")
    extra_module = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "class": "raw-nix"}),
        label="Extra NixOS module (raw Nix)",
        help_text="Operators only. Written verbatim to extra.nix and imported: it is code, not data.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["nixos_flake_url"].initial = django_settings.DEFAULT_NIXOS_FLAKE

    def clean_extra_groups(self) -> list[str] | None:
        groups = v.split_words(self.cleaned_data["extra_groups"])
        for group in groups:
            v.validate_username(group)
        return groups or None

    def clean_authorized_keys(self) -> list[str]:
        return v.split_lines(self.cleaned_data["authorized_keys"])

    def clean_extra_packages(self) -> list[list[str]]:
        paths = v.split_words(self.cleaned_data["extra_packages"])
        for path in paths:
            v.validate_attr_path(path)
        return [p.split(".") for p in dict.fromkeys(paths)]

    def clean_mon_blkalgn_ops(self) -> list[str]:
        return v.split_words(self.cleaned_data["mon_blkalgn_ops"])

    def clean_extra_module(self) -> str:
        text = self.cleaned_data["extra_module"]
        if text.strip():
            v.validate_nix_syntax(text)
        return text

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("mode") == "baremetal" and data.get("backend") != "imageless":
            self.add_error("mode", "baremetal activates the imageless closure: choose the imageless backend.")
        profiles = data.get("profiles") or []
        if "controller" in profiles and data.get("mode") not in (None, "controller"):
            self.add_error("profiles", "profiles.controller needs mode controller (it enables nixos-flake.controller).")
        return data

    def monitoring(self) -> dict[str, Any] | None:
        d = self.cleaned_data
        if "monitoring" not in d["profiles"]:
            return None
        sysstat: dict[str, Any] = {"enable": d["mon_sysstat"], "interval": d["mon_sysstat_interval"]}
        if d["mon_sysstat_max_samples"] is not None:
            sysstat["maxSamples"] = d["mon_sysstat_max_samples"]
        blkalgn: dict[str, Any] = {"enable": d["mon_blkalgn"], "ops": d["mon_blkalgn_ops"]}
        if d["mon_blkalgn_disk"]:
            blkalgn["disk"] = d["mon_blkalgn_disk"]
        bio: dict[str, Any] = {
            "enable": d["mon_biolatency"],
            "milliseconds": d["mon_bio_ms"],
            "queued": d["mon_bio_queued"],
            "perDisk": d["mon_bio_per_disk"],
            "perFlag": d["mon_bio_per_flag"],
            "interval": d["mon_bio_interval"],
        }
        if d["mon_bio_disk"]:
            bio["disk"] = d["mon_bio_disk"]
        return {
            "enable": True,
            "outputDir": d["mon_output_dir"] or MONITORING_DEFAULT_OUTPUT,
            "sysstat": sysstat,
            "cpuGovernor": {"enable": d["mon_cpu_governor"]},
            "blkalgn": blkalgn,
            "biolatency": bio,
        }


class ShareForm(forms.Form):
    mount_point = forms.CharField(max_length=200, validators=[v.validate_mount_point])
    tag = forms.CharField(max_length=36, validators=[v.validate_tag])
    options = forms.CharField(required=False, help_text="Comma separated mount options.")


class StorageForm(forms.Form):
    mount_point = forms.CharField(max_length=200, validators=[v.validate_mount_point])
    device = forms.CharField(max_length=200, help_text="e.g. /dev/vdb or LABEL=scratch")
    # No initial value: it would make every empty extra row look "changed".
    fs_type = forms.CharField(max_length=32, validators=[v.validate_fstype],
                              widget=forms.TextInput(attrs={"placeholder": "ext4"}))
    options = forms.CharField(required=False, help_text="Comma separated mount options.")
    mkfs_args = forms.CharField(required=False, help_text="Arguments to mkfs, shell-quoted.")
    auto_format = forms.BooleanField(required=False)

    def clean_device(self) -> str:
        device = self.cleaned_data["device"]
        if any(ch.isspace() for ch in device):
            raise ValidationError("A device has no white space in it.")
        return device

    def clean_mkfs_args(self) -> list[str]:
        return v.split_args(self.cleaned_data["mkfs_args"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("mkfs_args") and data.get("auto_format"):
            # nixos-flake's mounts.storage asserts the same; say it here, not in a failed build.
            raise ValidationError("Set mkfsArgs or autoFormat, not both (nixos-flake rejects the combination).")
        return data


class SourceOverrideForm(forms.Form):
    package = forms.CharField(max_length=100, validators=[v.validate_pkg_name])
    url = forms.CharField(max_length=500, validators=[v.validate_flake_url], label="Source URL")


class _UniqueFormSet(forms.BaseFormSet):
    unique_field = ""

    def clean(self) -> None:
        seen = set()
        for form in self.forms:
            if not form.has_changed() or self._should_delete_form(form) or not form.is_valid():
                continue
            key = form.cleaned_data.get(self.unique_field)
            if key in seen:
                raise ValidationError(f"“{key}” appears twice.")
            seen.add(key)


class ShareFormSet(_UniqueFormSet):
    unique_field = "mount_point"


class StorageFormSet(_UniqueFormSet):
    unique_field = "mount_point"


class SourceFormSet(_UniqueFormSet):
    unique_field = "package"


def _formset(form, base):
    return forms.formset_factory(form, formset=base, extra=1, can_delete=True, max_num=64, validate_max=True)


Shares = _formset(ShareForm, ShareFormSet)
Storage = _formset(StorageForm, StorageFormSet)
Sources = _formset(SourceOverrideForm, SourceFormSet)


def _rows(formset) -> list[dict[str, Any]]:
    return [
        f.cleaned_data
        for f in formset.forms
        if f.has_changed() and f.cleaned_data and not f.cleaned_data.get("DELETE")
    ]


def _options(text: str) -> list[str]:
    return [o.strip() for o in text.split(",") if o.strip()]


class ConfigurationEditor:
    """The main form plus formsets, validated and converted together."""

    def __init__(self, data=None, *, initial: dict[str, Any] | None = None, role: str = Role.OPERATOR):
        initial = initial or {}
        self.form = ConfigurationForm(data, initial=initial.get("form"))
        self.shares = Shares(data, prefix="shares", initial=initial.get("shares"))
        self.storage = Storage(data, prefix="storage", initial=initial.get("storage"))
        self.sources = Sources(data, prefix="sources", initial=initial.get("sources"))
        self.role = role

    @property
    def formsets(self):
        return [("Virtiofs shares", self.shares), ("Storage mounts", self.storage),
                ("Package source overrides", self.sources)]

    def is_valid(self) -> bool:
        results = [self.form.is_valid()] + [fs.is_valid() for _, fs in self.formsets]
        return all(results)

    def settings(self) -> dict[str, Any]:
        """The normalised settings dict (kdevweb.json) of a valid editor."""
        d = self.form.cleaned_data
        profiles = list(d["profiles"])
        if d["mode"] == "controller" and "controller" not in profiles:
            profiles.append("controller")
        profiles = [p for p in flake.PROFILES if p in profiles]
        d = {**d, "profiles": profiles}
        self.form.cleaned_data["profiles"] = profiles
        return {
            "backend": d["backend"],
            "mode": d["mode"],
            "nixosFlakeUrl": d["nixos_flake_url"],
            "hostName": d["host_name"],
            "user": {
                "name": d["user_name"],
                "extraGroups": d["extra_groups"],
                "authorizedKeys": d["authorized_keys"],
            },
            "profiles": profiles,
            "controller": "controller" in profiles,
            "monitoring": self.form.monitoring(),
            "testSuites": [t for t in flake.TEST_SUITES if t in d["test_suites"]],
            "extraPackages": d["extra_packages"],
            "sourceOverrides": {r["package"]: r["url"] for r in _rows(self.sources)},
            "shares": {r["mount_point"]: {"tag": r["tag"], "options": _options(r["options"])}
                       for r in _rows(self.shares)},
            "storage": {r["mount_point"]: _storage_entry(r) for r in _rows(self.storage)},
            "memoryMiB": d["memory_mib"],
            "vcpus": d["vcpus"],
            "diskSizeMiB": d["disk_size_mib"],
            "stateVersion": flake.STATE_VERSION,
        }


def _storage_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"device": row["device"], "fsType": row["fs_type"], "options": _options(row["options"])}
    if row["mkfs_args"]:
        entry["mkfsArgs"] = row["mkfs_args"]
    if row["auto_format"]:
        entry["autoFormat"] = True
    return entry


def initial_from_settings(s: dict[str, Any], *, name: str = "", extra_module: str = "") -> dict[str, Any]:
    """The inverse of `ConfigurationEditor.settings`: pre-fill the editor."""
    import shlex

    mon = s.get("monitoring") or {}
    sysstat, blk, bio = mon.get("sysstat", {}), mon.get("blkalgn", {}), mon.get("biolatency", {})
    form = {
        "name": name,
        "backend": s["backend"],
        "mode": s["mode"],
        "nixos_flake_url": s["nixosFlakeUrl"],
        "host_name": s["hostName"],
        "user_name": s["user"]["name"],
        "extra_groups": " ".join(s["user"]["extraGroups"] or []),
        "authorized_keys": "\n".join(s["user"]["authorizedKeys"]),
        "profiles": s["profiles"],
        "test_suites": s["testSuites"],
        "extra_packages": " ".join(".".join(p) for p in s["extraPackages"]),
        "memory_mib": s["memoryMiB"],
        "vcpus": s["vcpus"],
        "disk_size_mib": s["diskSizeMiB"],
        "extra_module": extra_module,
        "mon_output_dir": mon.get("outputDir", MONITORING_DEFAULT_OUTPUT),
        "mon_sysstat": sysstat.get("enable", False),
        "mon_sysstat_interval": sysstat.get("interval", 5),
        "mon_sysstat_max_samples": sysstat.get("maxSamples"),
        "mon_cpu_governor": mon.get("cpuGovernor", {}).get("enable", False),
        "mon_blkalgn": blk.get("enable", False),
        "mon_blkalgn_disk": blk.get("disk", ""),
        "mon_blkalgn_ops": " ".join(blk.get("ops", [])),
        "mon_biolatency": bio.get("enable", False),
        "mon_bio_ms": bio.get("milliseconds", False),
        "mon_bio_queued": bio.get("queued", False),
        "mon_bio_per_disk": bio.get("perDisk", False),
        "mon_bio_per_flag": bio.get("perFlag", False),
        "mon_bio_disk": bio.get("disk", ""),
        "mon_bio_interval": bio.get("interval", 30),
    }
    shares = [{"mount_point": mp, "tag": e["tag"], "options": ",".join(e["options"])}
              for mp, e in s["shares"].items()]
    storage = [{"mount_point": mp, "device": e["device"], "fs_type": e["fsType"],
                "options": ",".join(e["options"]), "mkfs_args": shlex.join(e.get("mkfsArgs", [])),
                "auto_format": e.get("autoFormat", False)} for mp, e in s["storage"].items()]
    sources = [{"package": p, "url": u} for p, u in s["sourceOverrides"].items()]
    return {"form": form, "shares": shares, "storage": storage, "sources": sources}

