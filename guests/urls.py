from django.urls import path

from . import views

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
]
