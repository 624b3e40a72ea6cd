"""The configuration form: every option of ../shared/reference/nixos-flake.md.

`ConfigurationForm` holds the single-valued options, grouped like the
nixos-flake modules (see `GROUPS`); `guests.editor.ConfigurationEditor`
bundles it with the share, storage and source-override formsets and turns
them into the settings dict `guests.flake.render_files` renders.

Every option's help names its upstream option path, type and default, so
the form can be filled in without reading the module sources.
"""

from typing import Any

from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from . import flake
from . import validators as v
from .models import Role

MON = flake.MONITORING_DEFAULTS
MONITORING_DEFAULT_OUTPUT = MON["outputDir"]


def upstream(option: str, type_: str, default: str, text: str = "") -> str:
    """Help text: what the field means, then the upstream option, its type and default."""
    return (text + " " if text else "") + f"{option} · {type_} · default {default}"


class LabForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(max_length=50, help_text="Short name used in URLs.")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


def _bool(label: str, option: str, default: bool, text: str = "") -> forms.BooleanField:
    return forms.BooleanField(required=False, initial=default, label=label,
                              help_text=upstream(option, "bool", str(default).lower(), text))


def _int(label: str, option: str, default: int) -> forms.IntegerField:
    # Not required: empty means upstream's default (the field only matters
    # with its profile ticked).
    return forms.IntegerField(required=False, initial=default, min_value=1, max_value=10**9, label=label,
                              help_text=upstream(option, "ints.positive", str(default)))


class ConfigurationForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Unique within the lab.")
    message = forms.CharField(max_length=200, required=False, label="Revision note")
    # -- backend and mode ---------------------------------------------------
    backend = forms.ChoiceField(
        choices=[(b, b) for b in flake.BACKENDS], initial="imageless",
        help_text="nixosModules.backends.<backend>. imageless: a closure booted by QEMU with an external "
        "kernel (output toplevel); libvirt: a qcow2 disk image with its own kernel (output image).",
    )
    mode = forms.ChoiceField(
        choices=[(m, m) for m in flake.MODES], initial="guest",
        help_text="baremetal activates the imageless closure on a real machine (give its root file system "
        "below); controller adds profiles.controller with nixos-flake.controller.enable = true and "
        "needs the libvirt backend, as upstream composes it.",
    )
    root_device = forms.CharField(
        required=False, max_length=200, label="Root device (baremetal)",
        help_text="fileSystems.\"/\".device of the real machine, e.g. /dev/nvme0n1p2 or LABEL=nixos. "
        "Replaces the imageless tmpfs root.",
    )
    root_fs_type = forms.CharField(
        required=False, max_length=32, label="Root file system type (baremetal)",
        widget=forms.TextInput(attrs={"placeholder": "ext4"}),
        help_text="fileSystems.\"/\".fsType · str, e.g. ext4, xfs, btrfs.",
    )
    root_options = forms.CharField(
        required=False, max_length=500, label="Root mount options (baremetal)",
        help_text="fileSystems.\"/\".options, comma separated · default defaults.",
    )
    nixos_flake_url = forms.CharField(
        label="nixos-flake source", max_length=500, validators=[v.validate_nixos_flake_url],
        help_text="inputs.nixos-flake.url: a github:, path: or git+file: flake reference.",
    )
    state_version = forms.CharField(
        required=False, max_length=5, label="system.stateVersion", validators=[v.validate_state_version],
        widget=forms.TextInput(attrs={"placeholder": flake.STATE_VERSION}),
        help_text="Empty: the backend's mkDefault, the nixpkgs release (right for guests built fresh). "
        "Pin it only if you keep a disk across nixpkgs upgrades.",
    )
    memory_mib = forms.IntegerField(label="Memory (MiB)", initial=2048, min_value=256, max_value=1048576,
                                    help_text="For the launcher; not a NixOS option.")
    vcpus = forms.IntegerField(label="vCPUs", initial=2, min_value=1, max_value=256,
                               help_text="For the launcher; not a NixOS option.")
    disk_size_mib = forms.IntegerField(
        label="Disk size (MiB, libvirt image)", initial=20480, min_value=1024, max_value=16777216,
        help_text="make-disk-image.nix diskSize · int · template default 20480.",
    )
    # -- user and access ----------------------------------------------------
    host_name = forms.CharField(max_length=63, initial="kdev", validators=[v.validate_hostname],
                                help_text=upstream("networking.hostName", "str", '"nixos"'))
    user_name = forms.CharField(max_length=32, initial="user", validators=[v.validate_username],
                                help_text=upstream("nixos-flake.user.name", "str", '"user"'))
    extra_groups = forms.CharField(
        required=False,
        help_text=upstream("nixos-flake.user.extraGroups", "listOf str", "wheel kvm (+ libvirtd on libvirt)",
                           "Space separated; empty keeps the backend's default."),
    )
    authorized_keys = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="users.users.<user>.openssh.authorizedKeys.keys: OpenSSH public keys, one per line. "
        "SSH is key-only.",
    )
    # -- profiles -----------------------------------------------------------
    profiles = forms.MultipleChoiceField(
        required=False, choices=[(p, p) for p in flake.PROFILES], widget=forms.CheckboxSelectMultiple,
        help_text="nixosModules.profiles.*: devel (debugging tools), build-tools (kernel build toolchain), "
        "monitoring (test-run monitors, options below), controller (mode controller only).",
    )
    mon_output_dir = forms.CharField(
        required=False, initial=MONITORING_DEFAULT_OUTPUT, max_length=500, label="outputDir",
        validators=[v.validate_service_path],
        help_text=upstream("nixos-flake.monitoring.outputDir", "str", f'"{MONITORING_DEFAULT_OUTPUT}"',
                           "%i is the run id."),
    )
    mon_sysstat = _bool("sysstat.enable", "monitoring.sysstat.enable", True, "Follows monitoring.enable.")
    mon_sysstat_interval = _int("sysstat.interval", "monitoring.sysstat.interval", MON["sysstat"]["interval"])
    mon_sysstat_max_samples = _int("sysstat.maxSamples", "monitoring.sysstat.maxSamples",
                                   MON["sysstat"]["maxSamples"])
    mon_cpu_governor = _bool("cpuGovernor.enable", "monitoring.cpuGovernor.enable", True,
                             "Follows monitoring.enable.")
    mon_blkalgn = _bool("blkalgn.enable", "monitoring.blkalgn.enable", False,
                        "Needs a libbpf-tools with blkalgn (not in upstream's BCC tag yet).")
    mon_blkalgn_disk = forms.CharField(required=False, max_length=200, label="blkalgn.disk",
                                       validators=[v.validate_disk],
                                       help_text=upstream("monitoring.blkalgn.disk", "str", '"" (every disk)'))
    mon_blkalgn_ops = forms.ChoiceField(
        required=False, label="blkalgn.ops", initial="",
        choices=[("", "all operations")] + [(op, op) for op in flake.BLKALGN_OPS],
        help_text=upstream("monitoring.blkalgn.ops", "str, one operation", '"" (all)'),
    )
    mon_biolatency = _bool("biolatency.enable", "monitoring.biolatency.enable", False)
    mon_bio_ms = _bool("biolatency.milliseconds", "monitoring.biolatency.milliseconds", True)
    mon_bio_queued = _bool("biolatency.queued", "monitoring.biolatency.queued", False)
    mon_bio_per_disk = _bool("biolatency.perDisk", "monitoring.biolatency.perDisk", False)
    mon_bio_per_flag = _bool("biolatency.perFlag", "monitoring.biolatency.perFlag", False)
    mon_bio_disk = forms.CharField(required=False, max_length=200, label="biolatency.disk",
                                   validators=[v.validate_disk],
                                   help_text=upstream("monitoring.biolatency.disk", "str", '"" (every disk)'))
    mon_bio_interval = _int("biolatency.interval", "monitoring.biolatency.interval",
                            MON["biolatency"]["interval"])
    # -- test suites --------------------------------------------------------
    test_suites = forms.MultipleChoiceField(
        required=False, choices=[(t, t) for t in flake.TEST_SUITES], widget=forms.CheckboxSelectMultiple,
        help_text="nixosModules.testSuites.*: each installs its suite and what it needs. fstests also "
        "creates the users fsgqa, fsgqa2, 123456-fsgqa, daemon, bin and sys and enables an NFS server; "
        "sysbench enables MariaDB and PostgreSQL.",
    )
    # -- packages -----------------------------------------------------------
    extra_packages = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="environment.systemPackages by attribute path, e.g. fio gdb python3Packages.pytest.",
    )
    # -- raw Nix ------------------------------------------------------------
    extra_module = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "class": "raw-nix"}),
        label="Extra NixOS module (raw Nix)",
        help_text="Operators only. Written verbatim to extra.nix and imported: it is code, not data.",
    )

    GROUPS = [
        ("Backend and mode", ["name", "backend", "mode", "root_device", "root_fs_type", "root_options",
                              "nixos_flake_url", "state_version", "memory_mib", "vcpus", "disk_size_mib"]),
        ("User and access", ["host_name", "user_name", "extra_groups", "authorized_keys"]),
        ("Profiles", ["profiles"]),
        ("Monitoring profile", ["mon_output_dir", "mon_sysstat", "mon_sysstat_interval", "mon_sysstat_max_samples",
                                "mon_cpu_governor", "mon_blkalgn", "mon_blkalgn_disk", "mon_blkalgn_ops",
                                "mon_biolatency", "mon_bio_ms", "mon_bio_queued", "mon_bio_per_disk",
                                "mon_bio_per_flag", "mon_bio_disk", "mon_bio_interval"]),
        ("Test suites", ["test_suites"]),
        ("Packages", ["extra_packages"]),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["nixos_flake_url"].initial = django_settings.DEFAULT_NIXOS_FLAKE
        if django_settings.NIX_OFFLINE:
            field = self.fields["nixos_flake_url"]
            field.help_text = (f"{field.help_text} This instance runs Nix offline: a remote source "
                               "(github:, https:, …) cannot be fetched and its build will fail; "
                               "the prefilled path: source builds offline.").strip()

    def groups(self):
        """(title, bound fields) in the order the page shows them."""
        return [(title, [self[n] for n in names]) for title, names in self.GROUPS]

    def clean_extra_groups(self) -> list[str] | None:
        groups = v.split_words(self.cleaned_data["extra_groups"])
        for group in groups:
            v.validate_username(group)
        return groups or None

    def clean_authorized_keys(self) -> list[str]:
        # Blank and comment lines are allowed (as in authorized_keys) and dropped.
        return v.authorized_keys(self.cleaned_data["authorized_keys"])

    def clean_extra_packages(self) -> list[list[str]]:
        paths = v.split_words(self.cleaned_data["extra_packages"])
        for path in paths:
            v.validate_attr_path(path)
        return [p.split(".") for p in dict.fromkeys(paths)]

    def clean_root_device(self) -> str:
        device = self.cleaned_data["root_device"].strip()
        if any(ch.isspace() for ch in device):
            raise ValidationError("A device has no white space in it.")
        return device

    def clean_root_fs_type(self) -> str:
        fs_type = self.cleaned_data["root_fs_type"].strip()
        if fs_type:
            v.validate_fstype(fs_type)
        return fs_type

    def clean_extra_module(self) -> str:
        text = self.cleaned_data["extra_module"]
        if text.strip():
            v.validate_nix_syntax(text)
        return text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        mode, backend = data.get("mode"), data.get("backend")
        if mode == "baremetal" and backend != "imageless":
            self.add_error("mode", "baremetal activates the imageless closure: choose the imageless backend.")
        if mode == "baremetal":
            for field in ("root_device", "root_fs_type"):
                if field in data and not data[field]:
                    self.add_error(field, "A real machine supplies its own root file system: give its device "
                                   "and file system type (the imageless root is a tmpfs in RAM).")
        if mode == "controller" and backend == "imageless":
            self.add_error("mode", "controller mode needs the libvirt backend: upstream composes "
                           "profiles.controller on a disk-booted host (the imageless backend has nix.enable "
                           "= false and no persistent disk), so a controller on imageless does not work.")
        profiles = data.get("profiles") or []
        if "controller" in profiles and mode not in (None, "controller"):
            self.add_error("profiles", "profiles.controller needs mode controller (it enables nixos-flake.controller).")
        user = data.get("user_name")
        if user:
            try:
                v.validate_login_name(user, fstests="fstests" in (data.get("test_suites") or []))
            except ValidationError as exc:
                self.add_error("user_name", exc)
        return data

    def monitoring(self) -> dict[str, Any] | None:
        """nixos-flake.monitoring: enable plus what differs from upstream's defaults."""
        d = self.cleaned_data
        if "monitoring" not in d["profiles"]:
            return None
        return flake.monitoring_overrides({
            "outputDir": d["mon_output_dir"] or MONITORING_DEFAULT_OUTPUT,
            "sysstat": {"enable": d["mon_sysstat"], "interval": d["mon_sysstat_interval"] or MON["sysstat"]["interval"],
                        "maxSamples": d["mon_sysstat_max_samples"] or MON["sysstat"]["maxSamples"]},
            "cpuGovernor": {"enable": d["mon_cpu_governor"]},
            "blkalgn": {"enable": d["mon_blkalgn"], "disk": d["mon_blkalgn_disk"], "ops": d["mon_blkalgn_ops"]},
            "biolatency": {"enable": d["mon_biolatency"], "milliseconds": d["mon_bio_ms"],
                           "queued": d["mon_bio_queued"], "perDisk": d["mon_bio_per_disk"],
                           "perFlag": d["mon_bio_per_flag"], "disk": d["mon_bio_disk"],
                           "interval": d["mon_bio_interval"] or MON["biolatency"]["interval"]},
        })


class ShareForm(forms.Form):
    mount_point = forms.CharField(max_length=200, validators=[v.validate_mount_point],
                                  help_text="nixos-flake.shares.<mountPoint> (attribute name)")
    tag = forms.CharField(max_length=36, validators=[v.validate_tag],
                          help_text="tag · str, required: the virtiofs tag the host announces")
    options = forms.CharField(required=False, help_text="options · listOf str · default [], comma separated")


class StorageForm(forms.Form):
    mount_point = forms.CharField(max_length=200, validators=[v.validate_mount_point],
                                  help_text="nixos-flake.storage.<mountPoint> (attribute name)")
    device = forms.CharField(max_length=200, help_text="device · str, required, e.g. /dev/vdb or LABEL=scratch")
    # No initial value: it would make every empty extra row look "changed".
    fs_type = forms.CharField(max_length=32, validators=[v.validate_fstype],
                              widget=forms.TextInput(attrs={"placeholder": "ext4"}),
                              help_text="fsType · str, required")
    options = forms.CharField(required=False, help_text="options · listOf str · default [], comma separated")
    mkfs_args = forms.CharField(required=False, help_text="mkfsArgs · listOf str · default [], shell-quoted")
    auto_format = forms.BooleanField(required=False, help_text="autoFormat · bool · default false")

    def clean_device(self) -> str:
        device = self.cleaned_data["device"]
        if any(ch.isspace() for ch in device):
            raise ValidationError("A device has no white space in it.")
        return device

    def clean_mkfs_args(self) -> list[str]:
        return v.split_args(self.cleaned_data["mkfs_args"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        if data.get("mkfs_args") and data.get("auto_format"):
            # nixos-flake's mounts.storage asserts the same; say it here, not in a failed build.
            raise ValidationError("Set mkfsArgs or autoFormat, not both (nixos-flake rejects the combination).")
        return data


class SourceOverrideForm(forms.Form):
    package = forms.CharField(max_length=100, validators=[v.validate_pkg_name],
                              help_text="Package attribute; its source comes from input <package>-src "
                              "(cpupower: kernel-src, the kernel tree).")
    url = forms.CharField(max_length=500, validators=[v.validate_flake_url], label="Source URL",
                          help_text="A flake reference read with flake = false, e.g. git+file:/srv/fio.")
