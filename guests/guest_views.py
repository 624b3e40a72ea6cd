"""Guest and kernel pages. Thin: forms validate, guests.guest_services acts,
guests.selectors reads. Lifecycle buttons POST to one view per action."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from builds.models import Build

from . import guest_services as services
from . import selectors
from .access import lab_view, role_at_least
from .guest_files import guest_delete_overview, guest_disks
from .guest_forms import GuestDeleteForm, GuestForm, KernelForm
from .models import Configuration, Role

# The agent heartbeats every 2 s (guests.hostagent.SCAN_EVERY).
AGENT_STALE_AFTER = 15


def _is_operator(request) -> bool:
    return role_at_least(request.lab_role, Role.OPERATOR)


@lab_view(Role.VIEWER)
def guest_list(request, lab):
    guests = list(selectors.guest_list(lab=lab))
    return render(request, "guests/guest_list.html", {
        "lab": lab, "guests": guests, "summaries": [selectors.guest_summary(g) for g in guests],
        "is_operator": _is_operator(request), "builds": selectors.succeeded_builds(lab=lab)[:20],
    })


def _chosen_build(request, lab):
    """The build to run: ?build=<id>, or ?config=<id>'s latest succeeded build."""
    source = request.POST if request.method == "POST" else request.GET
    if source.get("build", "").isdigit():
        return get_object_or_404(Build.objects.select_related("revision__configuration"), lab=lab,
                                 pk=int(source["build"]))
    if source.get("config", "").isdigit():
        config = get_object_or_404(Configuration, lab=lab, pk=int(source["config"]))
        build = selectors.latest_succeeded(configuration=config)
        if build is None:
            messages.error(request, f"{config.name} has no succeeded build yet; build it first.")
        return build
    return None


@lab_view(Role.OPERATOR)
def guest_new(request, lab):
    build = _chosen_build(request, lab)
    if build is None:
        if not messages.get_messages(request):
            messages.info(request, "Choose a succeeded build to run.")
        return redirect("guest-list", lab_slug=lab.slug)
    if build.status != "succeeded" or not build.out_path:
        messages.error(request, f"Build #{build.pk} has not succeeded; only a succeeded build can run.")
        return redirect("guest-list", lab_slug=lab.slug)
    form = GuestForm(request.POST if request.method == "POST" else None, build=build,
                     initial={"name": build.revision.configuration.name[:50]})
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            d = form.cleaned_data
            try:
                guest = services.guest_create(
                    lab=lab, build=build, name=d["name"], host=d["host"], kernel=d["kernel"],
                    memory_mib=d["memory_mib"], vcpus=d["vcpus"], extra_cmdline=d["extra_cmdline"],
                    disk_sizes=form.disk_sizes(), share_paths=form.share_paths(), user=request.user)
                messages.success(request, f"Created guest {guest.name}; press Start to boot it.")
                return redirect("guest", lab_slug=lab.slug, guest_id=guest.pk)
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
    return render(request, "guests/guest_form.html", {"lab": lab, "form": form, "build": build}, status=status)


@lab_view(Role.VIEWER)
def guest_detail(request, lab, guest_id):
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    seen = guest.host.agent_seen
    return render(request, "guests/guest_detail.html", {
        "agent_stale": seen is None or (timezone.now() - seen).total_seconds() > AGENT_STALE_AFTER,
        "lab": lab, "guest": guest, "summary": selectors.guest_summary(guest, events=True),
        "disks": guest_disks(guest), "shares": guest.shares.all(), "is_operator": _is_operator(request),
        "builds": selectors.succeeded_builds(lab=lab, configuration=guest.configuration).exclude(pk=guest.build_id),
        "libvirt": _libvirt_info(guest),
    })


def _libvirt_info(guest):
    """What the page shows of a libvirt guest's domain (None for QEMU guests)."""
    from guests import libvirt_agent

    if not libvirt_agent.is_libvirt(guest):
        return None
    return {"uri": guest.host.libvirt_uri, "domain": libvirt_agent.domain_name(guest),
            "xml": libvirt_agent.domain_xml_of(guest)}


def _act(request, lab, guest_id, what, done):
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    try:
        what(guest)
        messages.success(request, done.format(name=guest.name))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("guest", lab_slug=lab.slug, guest_id=guest.pk)


@lab_view(Role.OPERATOR)
@require_POST
def guest_start(request, lab, guest_id):
    return _act(request, lab, guest_id, lambda g: services.guest_start(guest=g, user=request.user),
                "Starting {name}.")


@lab_view(Role.OPERATOR)
@require_POST
def guest_stop(request, lab, guest_id):
    return _act(request, lab, guest_id, lambda g: services.guest_stop(guest=g, user=request.user),
                "Asked {name} to shut down (ACPI); it is forced off if it does not.")


@lab_view(Role.OPERATOR)
@require_POST
def guest_force_off(request, lab, guest_id):
    return _act(request, lab, guest_id, lambda g: services.guest_force_off(guest=g, user=request.user),
                "Forcing {name} off.")


@lab_view(Role.OPERATOR)
@require_POST
def guest_reboot(request, lab, guest_id):
    return _act(request, lab, guest_id, lambda g: services.guest_reboot(guest=g, user=request.user),
                "Rebooting {name}.")


@lab_view(Role.OPERATOR)
@require_POST
def guest_rollback(request, lab, guest_id):
    raw = request.POST.get("build", "")
    build = Build.objects.filter(lab=lab, pk=int(raw)).first() if raw.isdigit() else None
    if build is None:
        messages.error(request, "Choose a build of this configuration.")
        return redirect("guest", lab_slug=lab.slug, guest_id=guest_id)
    restart = request.POST.get("restart") == "yes"
    done = (f"Shutting {{name}} down to restart it on build #{build.pk}." if restart
            else f"{{name}} will run build #{build.pk} from its next start.")
    return _act(request, lab, guest_id,
                lambda g: services.guest_rollback(guest=g, build=build, user=request.user, restart=restart), done)


def _delete_page(request, lab, guest, form, status=200):
    return render(request, "guests/guest_delete.html", {
        "lab": lab, "guest": guest, "form": form, "overview": guest_delete_overview(guest)}, status=status)


@lab_view(Role.OPERATOR)
@require_GET
def guest_delete_confirm(request, lab, guest_id):
    """What deleting the guest removes, with the choices (keep by default)."""
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    return _delete_page(request, lab, guest, GuestDeleteForm())


@lab_view(Role.OPERATOR)
@require_POST
def guest_delete(request, lab, guest_id):
    """Deletes with the confirmation page's explicit choices; without them
    (or with anything else) the page again, saying what is missing."""
    guest = selectors.guest_get(lab=lab, guest_id=guest_id)
    form = GuestDeleteForm(request.POST)
    if form.is_valid():
        try:
            services.guest_delete(guest=guest, user=request.user,
                                  delete_disks=form.cleaned_data["disks"] == "delete",
                                  delete_transcripts=form.cleaned_data["transcripts"] == "delete")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("guest", lab_slug=lab.slug, guest_id=guest.pk)
        messages.success(request, f"Deleting {guest.name}.")
        return redirect("guest-list", lab_slug=lab.slug)
    return _delete_page(request, lab, guest, form, status=400)


@lab_view(Role.VIEWER)
def kernel_list(request, lab):
    return render(request, "guests/kernel_list.html", {
        "lab": lab, "kernels": selectors.kernels(), "form": KernelForm(), "is_operator": _is_operator(request)})


@lab_view(Role.OPERATOR)
@require_POST
def kernel_add(request, lab):
    form = KernelForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            kernel = services.kernel_add(host=d["host"], name=d["name"], image=d["image"],
                                         modules_dir=d["modules_dir"], user=request.user)
            messages.success(request, f"Added kernel {kernel}.")
            return redirect("kernel-list", lab_slug=lab.slug)
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
    return render(request, "guests/kernel_list.html", {
        "lab": lab, "kernels": selectors.kernels(), "form": form, "is_operator": True}, status=400)
