"""Build pages: start, watch, cancel, retry, history, compare, trend."""

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from guests import flake
from guests.access import lab_view, role_at_least
from guests.models import Configuration, Role

from . import logstore, nixcmd, services
from .models import ACTIVE, Build, Status
from .presenters import build_summary


@lab_view(Role.OPERATOR)
@require_POST
def build_start(request, lab, config_id, number):
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    revision = get_object_or_404(config.revisions, number=number)
    build = services.build_start(revision=revision, user=request.user)
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


def _build(lab, build_id) -> Build:
    qs = Build.objects.select_related("revision__configuration", "created_by", "retry_of")
    return get_object_or_404(qs, lab=lab, pk=build_id)


@lab_view(Role.VIEWER)
def build_detail(request, lab, build_id):
    build = _build(lab, build_id)
    summary = build_summary(build)
    spec = build.bootspec or {}
    ctx = {
        "lab": lab,
        "build": build,
        "summary": summary,
        "bootspec_rows": [(k, " ".join(v) if isinstance(v, list) else v) for k, v in spec.items()],
        "is_operator": role_at_least(request.lab_role, Role.OPERATOR),
        "active": build.status in ACTIVE,
    }
    return render(request, "builds/detail.html", ctx)


@lab_view(Role.OPERATOR)
@require_POST
def build_cancel(request, lab, build_id):
    build = _build(lab, build_id)
    if build.is_terminal:
        messages.error(request, f"Build #{build.pk} has already ended ({build.status}).")
    else:
        services.build_cancel(build=build)
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


@lab_view(Role.OPERATOR)
@require_POST
def build_retry(request, lab, build_id):
    build = services.build_retry(build=_build(lab, build_id), user=request.user)
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


@lab_view(Role.OPERATOR)
@require_POST
def build_delete(request, lab, build_id):
    build = _build(lab, build_id)
    try:
        services.build_delete(build=build)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("build", lab_slug=lab.slug, build_id=build.pk)
    messages.info(request, f"Build #{build_id} deleted, with its log and GC root.")
    return redirect("build-list", lab_slug=lab.slug)


@lab_view(Role.VIEWER)
def build_log(request, lab, build_id):
    build = _build(lab, build_id)
    # ?nix=1: nix's own internal-json stream instead of the log as shown.
    name = logstore.RAW if request.GET.get("nix") else logstore.PLAIN
    fh, gzipped = logstore.raw_stream(build.workdir, name)
    if fh is None:
        raise Http404("This build has no log.")
    name = f"build-{build.pk}-{name}" + (".gz" if gzipped else "")
    return FileResponse(fh, as_attachment=True, filename=name,
                        content_type="application/gzip" if gzipped else "text/plain")


class HistoryFilter(forms.Form):
    configuration = forms.ModelChoiceField(queryset=Configuration.objects.none(), required=False)
    status = forms.ChoiceField(choices=[("", "any")] + Status.choices, required=False)
    who = forms.CharField(required=False, max_length=150)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, lab, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["configuration"].queryset = lab.configurations.all()

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("“since” is after “until”.")
        return data

    def apply(self, qs):
        d = self.cleaned_data
        if d.get("configuration"):
            qs = qs.filter(revision__configuration=d["configuration"])
        if d.get("status"):
            qs = qs.filter(status=d["status"])
        if d.get("who"):
            qs = qs.filter(created_by__username=d["who"])
        if d.get("since"):
            qs = qs.filter(created__date__gte=d["since"])
        if d.get("until"):
            qs = qs.filter(created__date__lte=d["until"])
        return qs


@lab_view(Role.VIEWER)
def build_list(request, lab):
    form = HistoryFilter(request.GET or None, lab=lab)
    qs = Build.objects.filter(lab=lab).select_related("revision__configuration", "created_by")
    status = 200
    if form.is_bound:
        if form.is_valid():
            qs = form.apply(qs)
        else:
            qs, status = qs.none(), 400
    page = Paginator(qs.order_by("-created", "-id"), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"lab": lab, "form": form, "page": page, "query": query.urlencode()}
    return render(request, "builds/list.html", ctx, status=status)


@lab_view(Role.VIEWER)
def build_compare(request, lab):
    try:
        a_id, b_id = int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError:
        return HttpResponseBadRequest("Choose two builds to compare: ?a=<id>&b=<id>.")
    a, b = _build(lab, a_id), _build(lab, b_id)
    lines = flake.diff_files(a.revision.files, b.revision.files, a_label=f"#{a.pk}", b_label=f"#{b.pk}")
    closures, closure_error = "", ""
    if a.out_path and b.out_path:
        try:
            closures = nixcmd.diff_closures(a.out_path, b.out_path)
        except Exception as exc:  # a collected or missing path: say so, don't 500
            closure_error = str(exc)
    else:
        closure_error = "Both builds need an output to compare closures."
    ctx = {"lab": lab, "a": a, "b": b, "lines": lines, "closures": closures, "closure_error": closure_error}
    return render(request, "builds/compare.html", ctx)


def trend_points(durations: list[float], *, width: int = 600, height: int = 160) -> str:
    """SVG polyline points for durations (oldest first), scaled to the box."""
    if not durations:
        return ""
    top = max(durations) or 1.0
    step = width / max(len(durations) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - d / top * (height - 10):.1f}" for i, d in enumerate(durations))


@lab_view(Role.VIEWER)
def build_trend(request, lab, config_id):
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    builds = list(
        Build.objects.filter(revision__configuration=config, status=Status.SUCCEEDED)
        .exclude(started=None).exclude(finished=None)
        .select_related("revision").order_by("-finished")[:100]
    )[::-1]
    durations = [b.duration.total_seconds() for b in builds]
    ctx = {"lab": lab, "config": config, "builds": builds, "points": trend_points(durations),
           "longest": max(durations, default=0)}
    return render(request, "builds/trend.html", ctx)
