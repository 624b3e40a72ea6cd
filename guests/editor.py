"""The configuration editor: the main form plus the share, storage and
source-override formsets, validated together and turned into the settings
dict (kdevweb.json) that `guests.flake.render_files` renders — and back.

Cross-row rules live here because no single form sees them: a mount point
used twice across shares and storage, two overrides reading one input.
"""

import shlex
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from . import flake
from .forms import (
    MONITORING_DEFAULT_OUTPUT,
    ConfigurationForm,
    ShareForm,
    SourceOverrideForm,
    StorageForm,
)
from .models import Role


class _UniqueFormSet(forms.BaseFormSet):
    unique_field = ""

    def _construct_form(self, i, **kwargs):
        # A row emptied on the edit page is a removed row, not a half-filled one.
        kwargs["empty_permitted"] = True
        return super()._construct_form(i, **kwargs)

    def clean(self) -> None:
        seen = set()
        for form in self.forms:
            # _should_delete_form: Django's own test for a ticked DELETE box (not in the stubs).
            deleted = self._should_delete_form(form)  # type: ignore[attr-defined]
            if not form.has_changed() or deleted or not form.is_valid():
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

    def clean(self) -> None:
        super().clean()
        inputs: dict[str, str] = {}
        for form in _live(self):
            pkg = form.cleaned_data["package"]
            name = flake.source_input(pkg)
            if name in inputs:
                raise ValidationError(f"“{pkg}” and “{inputs[name]}” would both read the input {name}.")
            inputs[name] = pkg


def _formset(form, base):
    return forms.formset_factory(form, formset=base, extra=1, can_delete=True, max_num=64, validate_max=True)


Shares = _formset(ShareForm, ShareFormSet)
Storage = _formset(StorageForm, StorageFormSet)
Sources = _formset(SourceOverrideForm, SourceFormSet)


def _live(formset) -> list[forms.Form]:
    """The rows that count: filled in, valid, not marked for deletion."""
    return [f for f in formset.forms
            if f.has_changed() and f.is_valid() and f.cleaned_data and not f.cleaned_data.get("DELETE")]


def _rows(formset) -> list[dict[str, Any]]:
    return [f.cleaned_data for f in _live(formset)]


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
        return [("Virtiofs shares", "shares", self.shares), ("Storage mounts", "storage", self.storage),
                ("Package source overrides", "sources", self.sources)]

    def is_valid(self) -> bool:
        results = [self.form.is_valid()] + [fs.is_valid() for _, _, fs in self.formsets]
        if not all(results):
            return False
        self._check_mount_points()
        return self.form.is_valid() and all(fs.is_valid() and not fs.total_error_count()
                                            for _, _, fs in self.formsets)

    def _check_mount_points(self) -> None:
        # Shares and storage become one fileSystems attrset: a mount point
        # in both would be two definitions of one file system.
        shared = {f.cleaned_data["mount_point"] for f in _live(self.shares)}
        for form in _live(self.storage):
            mp = form.cleaned_data["mount_point"]
            if mp in shared:
                form.add_error("mount_point", f"“{mp}” is also a virtiofs share: one mount point, one file system.")

    def settings(self) -> dict[str, Any]:
        """The normalised settings dict (kdevweb.json) of a valid editor."""
        d = self.form.cleaned_data
        profiles = list(d["profiles"])
        if d["mode"] == "controller" and "controller" not in profiles:
            profiles.append("controller")
        profiles = [p for p in flake.PROFILES if p in profiles]
        self.form.cleaned_data["profiles"] = profiles
        baremetal = None
        if d["mode"] == "baremetal":
            baremetal = {"rootDevice": d["root_device"], "rootFsType": d["root_fs_type"],
                         "rootOptions": _options(d["root_options"])}
        return flake.default_settings(
            nixos_flake_url=d["nixos_flake_url"],
            backend=d["backend"],
            mode=d["mode"],
            hostName=d["host_name"],
            user={"name": d["user_name"], "extraGroups": d["extra_groups"], "authorizedKeys": d["authorized_keys"]},
            profiles=profiles,
            controller="controller" in profiles,
            monitoring=self.form.monitoring(),
            testSuites=[t for t in flake.TEST_SUITES if t in d["test_suites"]],
            extraPackages=d["extra_packages"],
            sourceOverrides={r["package"]: r["url"] for r in _rows(self.sources)},
            shares={r["mount_point"]: _share_entry(r) for r in _rows(self.shares)},
            storage={r["mount_point"]: _storage_entry(r) for r in _rows(self.storage)},
            memoryMiB=d["memory_mib"],
            vcpus=d["vcpus"],
            diskSizeMiB=d["disk_size_mib"],
            stateVersion=d["state_version"] or None,
            baremetal=baremetal,
        )


# Only what the user set is written; upstream defaults the rest.
def _share_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"tag": row["tag"]}
    if _options(row["options"]):
        entry["options"] = _options(row["options"])
    return entry


def _storage_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"device": row["device"], "fsType": row["fs_type"]}
    if _options(row["options"]):
        entry["options"] = _options(row["options"])
    if row["mkfs_args"]:
        entry["mkfsArgs"] = row["mkfs_args"]
    if row["auto_format"]:
        entry["autoFormat"] = True
    return entry


def initial_from_settings(s: dict[str, Any], *, name: str = "", extra_module: str = "") -> dict[str, Any]:
    """The inverse of `ConfigurationEditor.settings`: pre-fill the editor
    (from a revision of any schema; older ones are upgraded first)."""
    s = flake.upgrade_settings(s)
    mon = flake.monitoring_values(s.get("monitoring"))
    sysstat, blk, bio = mon["sysstat"], mon["blkalgn"], mon["biolatency"]
    bare = s.get("baremetal") or {}
    form = {
        "name": name,
        "backend": s["backend"],
        "mode": s["mode"],
        "root_device": bare.get("rootDevice", ""),
        "root_fs_type": bare.get("rootFsType", ""),
        "root_options": ",".join(bare.get("rootOptions", [])),
        "nixos_flake_url": s["nixosFlakeUrl"],
        "state_version": s.get("stateVersion") or "",
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
        "mon_output_dir": mon["outputDir"] or MONITORING_DEFAULT_OUTPUT,
        "mon_sysstat": sysstat["enable"],
        "mon_sysstat_interval": sysstat["interval"],
        "mon_sysstat_max_samples": sysstat["maxSamples"],
        "mon_cpu_governor": mon["cpuGovernor"]["enable"],
        "mon_blkalgn": blk["enable"],
        "mon_blkalgn_disk": blk["disk"],
        "mon_blkalgn_ops": blk["ops"],
        "mon_biolatency": bio["enable"],
        "mon_bio_ms": bio["milliseconds"],
        "mon_bio_queued": bio["queued"],
        "mon_bio_per_disk": bio["perDisk"],
        "mon_bio_per_flag": bio["perFlag"],
        "mon_bio_disk": bio["disk"],
        "mon_bio_interval": bio["interval"],
    }
    shares = [{"mount_point": mp, "tag": e["tag"], "options": ",".join(e.get("options", []))}
              for mp, e in s["shares"].items()]
    storage = [{"mount_point": mp, "device": e["device"], "fs_type": e["fsType"],
                "options": ",".join(e.get("options", [])), "mkfs_args": shlex.join(e.get("mkfsArgs", [])),
                "auto_format": e.get("autoFormat", False)} for mp, e in s["storage"].items()]
    sources = [{"package": p, "url": u if isinstance(u, str) else u["url"]}
               for p, u in s["sourceOverrides"].items()]
    return {"form": form, "shares": shares, "storage": storage, "sources": sources}


def settings_summary(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings a reader wants first, as (label, text) rows."""
    s = flake.upgrade_settings(s)
    none = "—"
    mon = s.get("monitoring")
    rows = [
        ("Backend", f"{s['backend']} (output {flake.output_name(s['backend'])})"),
        ("Mode", s["mode"]),
        ("Host and user", f"{s['hostName']}, user {s['user']['name']}"
                          f" ({len(s['user']['authorizedKeys'])} SSH key(s))"),
        ("Profiles", ", ".join(s["profiles"]) or none),
        ("Test suites", ", ".join(s["testSuites"]) or none),
        ("Packages", " ".join(".".join(p) for p in s["extraPackages"]) or none),
        ("Shares", ", ".join(f"{mp} ← {e['tag']}" for mp, e in s["shares"].items()) or none),
        ("Disks", ", ".join(f"{mp} ← {e['device']} ({e['fsType']})" for mp, e in s["storage"].items()) or none),
        ("Memory and CPUs", f"{s['memoryMiB']} MiB, {s['vcpus']} vCPU(s)"
                            + (f", {s['diskSizeMiB']} MiB disk" if s["backend"] == "libvirt" else "")),
    ]
    if mon:
        changed = [k for k in mon if k != "enable"]
        rows.insert(4, ("Monitoring", "upstream defaults" + (f" except {', '.join(changed)}" if changed else "")))
    if s.get("baremetal"):
        b = s["baremetal"]
        rows.insert(2, ("Root file system", f"{b['rootDevice']} ({b['rootFsType']})"))
    if s["sourceOverrides"]:
        rows.append(("Source overrides", ", ".join(s["sourceOverrides"])))
    if s.get("stateVersion"):
        rows.append(("system.stateVersion", s["stateVersion"]))
    return rows


def form_sections(editor: ConfigurationEditor) -> list[dict[str, Any]]:
    """The page's sections in module order: each a title, the main form's
    fields in it, the formsets in it, and when it applies (for the page
    script; without it every section shows)."""
    field_when = {"root_device": ("mode", "baremetal"), "root_fs_type": ("mode", "baremetal"),
                  "root_options": ("mode", "baremetal"), "disk_size_mib": ("backend", "libvirt")}
    groups = {title: [{"field": bf, "when": field_when.get(bf.name)} for bf in fields]
              for title, fields in editor.form.groups()}
    when = {"Monitoring profile": ("profiles", "monitoring")}
    sections: list[dict[str, Any]] = [{"title": t, "fields": groups[t], "formsets": [], "when": when.get(t)}
                for t in ("Backend and mode", "User and access", "Profiles", "Monitoring profile", "Test suites")]
    sections.append({"title": "Disks and shares", "fields": [], "when": None,
                     "formsets": [("Virtiofs shares (mounts.shares)", "shares", editor.shares),
                                  ("Storage mounts (mounts.storage)", "storage", editor.storage)]})
    sections.append({"title": "Packages and source overrides", "fields": groups["Packages"], "when": None,
                     "formsets": [("Package source overrides", "sources", editor.sources)]})
    return sections
