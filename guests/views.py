"""Lab, member and configuration views. Thin: forms validate, services act."""

from django.conf import settings as django_settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from . import flake, services
from .access import can_create_lab, lab_view, role_at_least
from .editor import ConfigurationEditor, form_sections, initial_from_settings, settings_summary
from .forms import LabForm, MemberForm, RoleForm
from .models import Configuration, Lab, Membership, Revision, Role


def _error_to_form(form, exc: ValidationError, field=None) -> None:
    for msg in exc.messages:
        form.add_error(field, msg)


@login_required
def index(request):
    labs = Lab.objects.all() if request.user.is_superuser else Lab.objects.filter(memberships__user=request.user)
    return render(request, "guests/index.html",
                  {"labs": labs, "form": LabForm(), "can_create_lab": can_create_lab(request.user)})


@login_required
@require_POST
def lab_new(request):
    if not can_create_lab(request.user):
        raise PermissionDenied("Creating labs needs staff status or the “Can add lab” permission (ask an admin).")
    form = LabForm(request.POST)
    if form.is_valid():
        try:
            lab = services.lab_create(user=request.user, **form.cleaned_data)
            return redirect("lab", lab_slug=lab.slug)
        except ValidationError as exc:
            _error_to_form(form, exc, "slug")
    labs = Lab.objects.filter(memberships__user=request.user)
    return render(request, "guests/index.html", {"labs": labs, "form": form, "can_create_lab": True}, status=400)


@lab_view(Role.VIEWER)
def lab_detail(request, lab):
    return render(request, "guests/lab.html", _lab_context(request, lab, MemberForm()))


def _lab_context(request, lab, member_form):
    return {
        "lab": lab,
        "role": request.lab_role,
        "is_admin": role_at_least(request.lab_role, Role.ADMIN),
        "is_operator": role_at_least(request.lab_role, Role.OPERATOR),
        "configurations": lab.configurations.all(),
        "memberships": lab.memberships.select_related("user"),
        "member_form": member_form,
        "roles": Role.choices,
    }


@lab_view(Role.ADMIN)
@require_POST
def member_add(request, lab):
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            services.member_add(lab=lab, **form.cleaned_data)
            messages.success(request, f"Added {form.cleaned_data['username']} to {lab}.")
            return redirect("lab", lab_slug=lab.slug)
        except ValidationError:
            # One message whatever the reason, so a lab admin cannot probe
            # which user names exist on the instance.
            form.add_error("username", f"Could not add “{form.cleaned_data['username']}”: they need an "
                                       "account here and must not be a member of this lab already.")
    return render(request, "guests/lab.html", _lab_context(request, lab, form), status=400)


@lab_view(Role.ADMIN)
@require_POST
def member_role(request, lab, member_id):
    membership = get_object_or_404(Membership, lab=lab, pk=member_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown role.")
    try:
        services.member_set_role(membership=membership, role=form.cleaned_data["role"])
        messages.success(request, f"{membership.user.username} is now {form.cleaned_data['role']} in {lab}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("lab", lab_slug=lab.slug)


@lab_view(Role.ADMIN)
@require_POST
def member_remove(request, lab, member_id):
    membership = get_object_or_404(Membership, lab=lab, pk=member_id)
    try:
        services.member_remove(membership=membership)
        messages.success(request, f"{membership.user.username} was removed from {lab}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("lab", lab_slug=lab.slug)


def config_builds(config, limit: int = 10):
    """The configuration's latest builds (any revision)."""
    from builds.models import Build

    return (Build.objects.filter(revision__configuration=config)
            .select_related("revision", "created_by").order_by("-created", "-id")[:limit])


def _editor_page(request, lab, editor, *, config=None, base=None, status=200):
    ctx = {"lab": lab, "editor": editor, "editor_sections": form_sections(editor), "config": config, "base": base,
           "role": request.lab_role}
    return render(request, "guests/config_form.html", ctx, status=status)


@lab_view(Role.OPERATOR)
def config_new(request, lab):
    if request.method != "POST":
        return _editor_page(request, lab, ConfigurationEditor())
    editor = ConfigurationEditor(request.POST)
    if editor.is_valid():
        d = editor.form.cleaned_data
        try:
            config = services.configuration_create(
                lab=lab, name=d["name"], settings=editor.settings(), extra_module=d["extra_module"],
                message=d["message"], user=request.user,
            )
            messages.success(request, f"Created {config.name} r1; it is being evaluated.")
            _warn_remote_offline(request, config.latest)
            return redirect("config", lab_slug=lab.slug, config_id=config.pk)
        except ValidationError as exc:
            _error_to_form(editor.form, exc, "name")
    return _editor_page(request, lab, editor, status=400)


@lab_view(Role.OPERATOR)
def config_edit(request, lab, config_id):
    """Edit the latest revision or, with ?from=<n>, start from revision n
    (restoring it: saving makes a new revision with its settings)."""
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    latest = config.latest
    if request.method != "POST":
        base = latest
        if request.GET.get("from", "").isdigit():
            base = get_object_or_404(config.revisions, number=int(request.GET["from"]))
        initial = initial_from_settings(base.settings, name=config.name, extra_module=base.extra_module)
        if base != latest:
            initial["form"]["message"] = f"restore r{base.number}"
        return _editor_page(request, lab, ConfigurationEditor(initial=initial), config=config, base=base)
    editor = ConfigurationEditor(request.POST)
    if editor.is_valid():
        d = editor.form.cleaned_data
        settings = editor.settings()
        if d["name"] != config.name:
            editor.form.add_error("name", "Renaming is not supported: clone the configuration instead.")
        elif unchanged(latest, settings, d["extra_module"]):
            editor.form.add_error(None, f"Nothing changed: r{latest.number} already has exactly these settings. "
                                  "Change something, or leave the page.")
        else:
            rev = services.revision_create(configuration=config, settings=settings,
                                           extra_module=d["extra_module"], message=d["message"], user=request.user)
            messages.success(request, f"Saved r{rev.number}; it is being evaluated.")
            _warn_remote_offline(request, rev)
            return redirect("config", lab_slug=lab.slug, config_id=config.pk)
    return _editor_page(request, lab, editor, config=config, status=400)


def _warn_remote_offline(request, revision: Revision) -> None:
    url = revision.settings.get("nixosFlakeUrl", "")
    if django_settings.NIX_OFFLINE and flake.is_remote_source(url):
        messages.warning(request, f"This instance runs Nix offline: {url} cannot be fetched, so this revision "
                         "will not evaluate or build here. Use a path: source such as the prefilled stand-in.")


def unchanged(latest: Revision, settings: dict, extra_module: str) -> bool:
    """A save that would add a revision identical to the latest one.

    A revision of an older settings schema is never "unchanged": saving it
    again is how it gets rendered the current way.
    """
    return latest.settings == settings and latest.extra_module == extra_module


def _revision(lab, config_id, number=None) -> tuple[Configuration, Revision | None]:
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    revs = config.revisions.all()
    rev = get_object_or_404(revs, number=number) if number is not None else revs.first()
    return config, rev


@lab_view(Role.VIEWER)
def config_detail(request, lab, config_id, number=None):
    config, rev = _revision(lab, config_id, number)
    ctx = {
        "lab": lab,
        "config": config,
        "rev": rev,
        "files": sorted(rev.files.items(), key=lambda kv: (kv[0] != "flake.nix", kv[0])),
        "revisions": config.revisions.select_related("created_by"),
        "is_operator": role_at_least(request.lab_role, Role.OPERATOR),
        "output": flake.output_name(rev.backend),
        "builds": config_builds(config),
        "latest_number": config.revisions.values_list("number", flat=True).first(),
        "summary": settings_summary(rev.settings),
    }
    return render(request, "guests/config_detail.html", ctx)


@lab_view(Role.VIEWER)
def config_download(request, lab, config_id, number):
    config, rev = _revision(lab, config_id, number)
    top = f"{config.name}-r{rev.number}"
    top = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in top)
    response = HttpResponse(flake.files_tarball(rev.files, top=top), content_type="application/gzip")
    # RFC 6266: an ASCII filename= plus filename*=UTF-8'' for names outside
    # Latin-1 (a raw one would not even encode as a header).
    response["Content-Disposition"] = content_disposition_header(True, f"{top}.tar.gz")
    return response


@lab_view(Role.VIEWER)
def config_diff(request, lab, config_id):
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    try:
        a_num, b_num = int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError:
        messages.error(request, "Pick two revisions to compare (a and b).")
        return redirect("config", lab_slug=lab.slug, config_id=config.pk)
    a = config.revisions.filter(number=a_num).first()
    b = config.revisions.filter(number=b_num).first()
    if a is None or b is None:
        messages.error(request, f"{config.name} has no revision {a_num if a is None else b_num}.")
        return redirect("config", lab_slug=lab.slug, config_id=config.pk)
    lines = flake.diff_files(a.files, b.files, a_label=f"r{a.number}", b_label=f"r{b.number}")
    return render(request, "guests/config_diff.html", {"lab": lab, "config": config, "a": a, "b": b, "lines": lines})


@lab_view(Role.OPERATOR)
@require_POST
def config_clone(request, lab, config_id):
    config, rev = _revision(lab, config_id)
    name = request.POST.get("name", "").strip()
    if not name or len(name) > 100:
        messages.error(request, "Give the clone a name of 1–100 characters.")
        return redirect("config", lab_slug=lab.slug, config_id=config.pk)
    try:
        clone = services.configuration_clone(revision=rev, name=name, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("config", lab_slug=lab.slug, config_id=config.pk)
    messages.success(request, f"Cloned {rev} as {clone.name}; it is being evaluated.")
    return redirect("config", lab_slug=lab.slug, config_id=clone.pk)
