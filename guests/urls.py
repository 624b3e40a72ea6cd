from django.urls import path

from . import console_views, guest_views, views

urlpatterns = [
    path("", views.index, name="index"),
    path("labs/new/", views.lab_new, name="lab-new"),
    path("labs/<slug:lab_slug>/", views.lab_detail, name="lab"),
    path("labs/<slug:lab_slug>/members/add/", views.member_add, name="member-add"),
    path("labs/<slug:lab_slug>/members/<int:member_id>/role/", views.member_role, name="member-role"),
    path("labs/<slug:lab_slug>/members/<int:member_id>/remove/", views.member_remove, name="member-remove"),
    path("labs/<slug:lab_slug>/configs/new/", views.config_new, name="config-new"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/", views.config_detail, name="config"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/edit/", views.config_edit, name="config-edit"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/clone/", views.config_clone, name="config-clone"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/diff/", views.config_diff, name="config-diff"),
    path("labs/<slug:lab_slug>/configs/<int:config_id>/r/<int:number>/", views.config_detail, name="revision"),
    path(
        "labs/<slug:lab_slug>/configs/<int:config_id>/r/<int:number>/download/",
        views.config_download,
        name="revision-download",
    ),
    path("labs/<slug:lab_slug>/guests/", guest_views.guest_list, name="guest-list"),
    path("labs/<slug:lab_slug>/guests/new/", guest_views.guest_new, name="guest-new"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/", guest_views.guest_detail, name="guest"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/start/", guest_views.guest_start, name="guest-start"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/stop/", guest_views.guest_stop, name="guest-stop"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/force-off/", guest_views.guest_force_off,
         name="guest-force-off"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/reboot/", guest_views.guest_reboot, name="guest-reboot"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/rollback/", guest_views.guest_rollback,
         name="guest-rollback"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/delete/", guest_views.guest_delete, name="guest-delete"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/console/", console_views.guest_console, name="guest-console"),
    path("labs/<slug:lab_slug>/guests/<int:guest_id>/console/transcript/", console_views.guest_console_transcript,
         name="guest-console-transcript"),
    path("labs/<slug:lab_slug>/kernels/", guest_views.kernel_list, name="kernel-list"),
    path("labs/<slug:lab_slug>/kernels/add/", guest_views.kernel_add, name="kernel-add"),
]
