"""Forms of the guest pages: the create form grows a field per disk and share
of the build's configuration; the services do the real checking."""

from __future__ import annotations

from django import forms

from .vm_models import Host, Kernel


class GuestForm(forms.Form):
    name = forms.CharField(max_length=63)
    host = forms.ModelChoiceField(queryset=Host.objects.all(), empty_label=None)
    kernel = forms.ModelChoiceField(queryset=Kernel.objects.select_related("host"), empty_label=None)
    memory_mib = forms.IntegerField(label="Memory (MiB)", min_value=128, max_value=1024 * 1024)
    vcpus = forms.IntegerField(label="vCPUs", min_value=1, max_value=64)
    extra_cmdline = forms.CharField(label="Extra kernel arguments", required=False, max_length=4096,
                                    help_text="appended after root=tmpfs console=… init=…; one line")

    def __init__(self, *args, build, **kwargs):
        super().__init__(*args, **kwargs)
        settings = build.revision.settings
        self.fields["memory_mib"].initial = settings.get("memoryMiB") or 1024
        self.fields["vcpus"].initial = settings.get("vcpus") or 2
        default = Kernel.objects.filter(is_default=True).first()
        if default is not None:
            self.fields["kernel"].initial = default.pk
            self.fields["host"].initial = default.host_id
        self.disks = []
        for index, mount in enumerate(sorted(settings.get("storage") or {})):
            name = f"disk_{index}"
            self.fields[name] = forms.IntegerField(label=f"Disk for {mount} (MiB)", min_value=1,
                                                   initial=settings.get("diskSizeMiB") or 20480)
            self.disks.append((name, mount))
        self.shares = []
        for index, (mount, share) in enumerate(sorted((settings.get("shares") or {}).items())):
            path, ro = f"share_{index}", f"share_{index}_ro"
            self.fields[path] = forms.CharField(label=f"Host directory for share “{share['tag']}” ({mount})",
                                                max_length=400)
            self.fields[ro] = forms.BooleanField(label="read-only", required=False)
            self.shares.append((path, ro, share["tag"]))

    def clean(self):
        data = super().clean()
        if data.get("host") and data.get("kernel") and data["kernel"].host_id != data["host"].pk:
            self.add_error("kernel", f"That kernel is on host {data['kernel'].host}, not {data['host']}.")
        return data

    def disk_sizes(self) -> dict[str, int]:
        return {mount: self.cleaned_data[name] for name, mount in self.disks}

    def share_paths(self) -> dict[str, tuple[str, bool]]:
        return {tag: (self.cleaned_data[path], self.cleaned_data[ro]) for path, ro, tag in self.shares}


class KernelForm(forms.Form):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), empty_label=None)
    name = forms.CharField(max_length=100)
    image = forms.CharField(label="Kernel image", max_length=400,
                            help_text="bzImage (arch/x86/boot/bzImage) or vmlinux, an absolute path on the host")
    modules_dir = forms.CharField(label="Modules directory", max_length=400,
                                  help_text="…/lib/modules/<version> after make modules_install INSTALL_MOD_PATH=…")


def _keep_or_delete(what: str) -> forms.ChoiceField:
    return forms.ChoiceField(
        choices=[("keep", f"Keep its {what}"), ("delete", f"Delete its {what}")], widget=forms.RadioSelect,
        initial="keep", error_messages={
            "required": f"Choose whether to keep or delete its {what}.",
            "invalid_choice": f"Choose “keep” or “delete” for its {what}; “%(value)s” is neither."})


class GuestDeleteForm(forms.Form):
    """The delete confirmation's explicit choices (both default to keep)."""

    disks = _keep_or_delete("disks")
    transcripts = _keep_or_delete("console transcripts")

    def clean(self):
        data = super().clean()
        for name, what in (("disks", "disks"), ("transcripts", "console transcripts")):
            # A form field takes the last of repeated values: two answers are no answer.
            if hasattr(self.data, "getlist") and len(self.data.getlist(name)) > 1:
                self.add_error(name, f"Give one answer for its {what}, not several.")
        return data
