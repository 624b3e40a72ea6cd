from django.urls import path

from . import views

urlpatterns = [
    path("labs/<slug:lab_slug>/configs/<int:config_id>/r/<int:number>/build/", views.build_start, name="build-start"),
    path("labs/<slug:lab_slug>/builds/", views.build_list, name="build-list"),
    path("labs/<slug:lab_slug>/builds/compare/", views.build_compare, name="build-compare"),
    path("labs/<slug:lab_slug>/builds/states/", views.build_states, name="build-states"),
    path("labs/<slug:lab_slug>/builds/<int:build_id>/", views.build_detail, name="build"),
    path("labs/<slug:lab_slug>/builds/<int:build_id>/cancel/", views.build_cancel, name="build-cancel"),
    path("labs/<slug:lab_slug>/builds/<int:build_id>/retry/", views.build_retry, name="build-retry"),
    path("labs/<slug:lab_slug>/builds/<int:build_id>/delete/", views.build_delete, name="build-delete"),
    path("labs/<slug:lab_slug>/builds/<int:build_id>/log/", views.build_log, name="build-log"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/durations/", views.build_trend, name="build-trend"),
]
