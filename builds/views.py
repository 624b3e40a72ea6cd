"""Build pages: start, watch, cancel, retry, history, compare, trend."""

import gzip

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from guests import flake
from guests.access import lab_view, role_at_least
from guests.models import Configuration, Role

from . import bootspec, charts, logstore, nixcmd, selectors, services, timefmt
from .models import ACTIVE, Status
from .presenters import build_summary, is_cache_hit

def remote_while_offline(revision) -> str:
    """The remote source a revision needs although Nix runs offline, or ""."""
    url = (revision.settings or {}).get("nixosFlakeUrl", "")
    return url if settings.NIX_OFFLINE and flake.is_remote_source(url) else ""


@lab_view(Role.OPERATOR)
@require_POST
def build_start(request, lab, config_id, number):
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    revision = get_object_or_404(config.revisions, number=number)
    build = services.build_start(revision=revision, user=request.user)
    messages.success(request, f"Build #{build.pk} of {revision} queued.")
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


@lab_view(Role.VIEWER)
def build_detail(request, lab, build_id):
    build = selectors.build_get(lab=lab, build_id=build_id)
    summary = build_summary(build)
    spec = build.bootspec or {}
    ctx = {
        "lab": lab,
        "build": build,
        "summary": summary,
        "bootspec_rows": bootspec.rows(spec),
        "is_operator": role_at_least(request.lab_role, Role.OPERATOR),
        "active": build.status in ACTIVE,
        "offline_remote": remote_while_offline(build.revision),
    }
    return render(request, "builds/detail.html", ctx)


@lab_view(Role.OPERATOR)
@require_POST
def build_cancel(request, lab, build_id):
    build = selectors.build_get(lab=lab, build_id=build_id)
    if build.is_terminal:
        messages.error(request, f"Build #{build.pk} has already ended ({build.status}).")
    else:
        services.build_cancel(build=build)
        messages.info(request, f"Cancelling build #{build.pk}.")
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


@lab_view(Role.OPERATOR)
@require_POST
def build_retry(request, lab, build_id):
    old = selectors.build_get(lab=lab, build_id=build_id)
    if not old.is_terminal:
        messages.error(request, f"Build #{old.pk} is still {old.status}: retry it once it has ended.")
        return redirect("build", lab_slug=lab.slug, build_id=old.pk)
    build = services.build_retry(build=old, user=request.user)
    messages.success(request, f"Build #{build.pk} queued: a retry of #{old.pk}.")
    return redirect("build", lab_slug=lab.slug, build_id=build.pk)


@lab_view(Role.OPERATOR)
@require_POST
def build_delete(request, lab, build_id):
    """Two steps: the first POST shows what will go, the second (with
    ``confirm``) deletes. Both are POSTs, so a link can never delete."""
    build = selectors.build_get(lab=lab, build_id=build_id)
    if request.POST.get("confirm") != "yes":
        return render(request, "builds/delete_confirm.html", {"lab": lab, "build": build})
    try:
        services.build_delete(build=build)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("build", lab_slug=lab.slug, build_id=build.pk)
    messages.success(request, f"Build #{build_id} deleted, with its log and GC root.")
    return redirect("build-list", lab_slug=lab.slug)


@lab_view(Role.VIEWER)
def build_log(request, lab, build_id):
    """The log as a download, or with ``?view=1`` as plain text in the tab."""
    build = selectors.build_get(lab=lab, build_id=build_id)
    # ?nix=1: nix's own internal-json stream instead of the log as shown.
    name = logstore.RAW if request.GET.get("nix") else logstore.PLAIN
    fh, gzipped = logstore.raw_stream(build.workdir, name)
    if fh is None:
        raise Http404("This build has no log.")
    filename = f"build-{build.pk}-{name}"
    if request.GET.get("view"):
        stream = gzip.GzipFile(fileobj=fh) if gzipped else fh
        response = FileResponse(stream, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{filename}.txt"'
        return response
    filename += ".gz" if gzipped else ""
    return FileResponse(fh, as_attachment=True, filename=filename,
                        content_type="application/gzip" if gzipped else "text/plain")


class HistoryFilter(forms.Form):
    configuration = forms.ModelChoiceField(queryset=Configuration.objects.none(), required=False,
                                           empty_label="any configuration")
    status = forms.ChoiceField(choices=[("", "any status")] + Status.choices, required=False)
    who = forms.CharField(required=False, max_length=150, label="Started by",
                          widget=forms.TextInput(attrs={"placeholder": "part of a username"}))
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, lab, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["configuration"].queryset = lab.configurations.all()

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("“From” is after “To”.")
        return data


def _history(request, lab, *, compare_error: str = "", status: int = 200):
    form = HistoryFilter(request.GET if request.GET.keys() - {"page", "a", "b"} else None, lab=lab)
    qs = selectors.build_list(lab=lab)
    if form.is_bound:
        if form.is_valid():
            qs = selectors.build_list(lab=lab, **form.cleaned_data)
        else:
            qs, status = qs.none(), 400
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    for key in ("page", "a", "b"):
        query.pop(key, None)
    ctx = {"lab": lab, "form": form, "page": page, "query": query.urlencode(), "compare_error": compare_error}
    return render(request, "builds/list.html", ctx, status=status)


@lab_view(Role.VIEWER)
def build_list(request, lab):
    return _history(request, lab)


@lab_view(Role.VIEWER)
def build_states(request, lab):
    """Status of some builds (``?ids=1,2``) for the history page's running rows."""
    try:
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.strip()]
    except ValueError:
        return JsonResponse({"error": "ids: a comma-separated list of build numbers"}, status=400)
    states = {}
    for b in selectors.build_states(lab=lab, ids=ids):
        states[b.pk] = {"status": b.status, "label": b.get_status_display(), "terminal": b.is_terminal,
                        "duration": timefmt.duration(b.duration),
                        "cache_hit": is_cache_hit(b)}
    return JsonResponse({"builds": states})


@lab_view(Role.VIEWER)
def build_compare(request, lab):
    raw_a, raw_b = request.GET.get("a", ""), request.GET.get("b", "")
    if not raw_a or not raw_b:
        return _history(request, lab, status=400,
                        compare_error="To compare, pick one build in column a and another in column b.")
    try:
        a_id, b_id = int(raw_a), int(raw_b)
    except ValueError:
        return _history(request, lab, status=400, compare_error="a and b must be build numbers.")
    if a_id == b_id:
        return _history(request, lab, status=400, compare_error="Pick two different builds to compare.")
    found = selectors.builds_by_id(lab=lab, ids=[a_id, b_id])
    missing = [f"#{i}" for i in (a_id, b_id) if i not in found]
    if missing:
        return _history(request, lab, status=400,
                        compare_error=f"No build {' or '.join(missing)} in {lab}: pick two from the list.")
    a, b = found[a_id], found[b_id]
    lines = flake.diff_files(a.revision.files, b.revision.files, a_label=f"#{a.pk}", b_label=f"#{b.pk}")
    closures, closure_error = "", ""
    if a.out_path and b.out_path:
        try:
            closures = nixcmd.diff_closures(a.out_path, b.out_path)
        except Exception as exc:  # a collected or missing path: say so, don't 500
            closure_error = str(exc)
    else:
        closure_error = "Both builds need an output to compare closures."
    ctx = {"lab": lab, "a": a, "b": b, "a_b": [a, b], "lines": lines, "closures": closures,
           "closure_error": closure_error}
    return render(request, "builds/compare.html", ctx)


@lab_view(Role.VIEWER)
def build_trend(request, lab, config_id):
    config = get_object_or_404(Configuration, lab=lab, pk=config_id)
    builds = selectors.build_trend(configuration=config)
    points = [
        charts.Point(t=timezone.localtime(b.finished), seconds=b.duration.total_seconds(), ok=b.status == Status.SUCCEEDED,
                     cache_hit=is_cache_hit(b), url=reverse("build", args=[lab.slug, b.pk]),
                     label=f"#{b.pk} r{b.revision.number} {b.status}")
        for b in builds
    ]
    chart = charts.duration_chart(points) if points else None
    rows = list(zip(builds, points))[::-1]
    return render(request, "builds/trend.html", {"lab": lab, "config": config, "chart": chart, "rows": rows})
