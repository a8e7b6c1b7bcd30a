"""Routes of the server-rendered pages: login, projects, the annotation screen, import, members, settings,
review and quality control."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import review_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/new/", views.project_new, name="project_new"),
    path("tokens/", views.tokens_page, name="tokens"),
    path("p/<slug:slug>/", views.project_page, name="project"),
    path("p/<slug:slug>/annotate/", views.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/submit/", views.submit, name="submit"),
    path("p/<slug:slug>/annotate/skip/", views.skip, name="skip"),
    path("p/<slug:slug>/annotate/undo/", views.undo, name="undo"),
    path("p/<slug:slug>/import/", views.import_page, name="import"),
    path("p/<slug:slug>/members/", views.members_page, name="members"),
    path("p/<slug:slug>/settings/", views.settings_page, name="settings"),
    path("p/<slug:slug>/settings/preview/", views.instructions_preview, name="instructions_preview"),
    path("p/<slug:slug>/comparisons/", views.comparisons_page, name="comparisons"),
    path("p/<slug:slug>/comparisons/gold/", review_views.mark_gold, name="mark_gold"),
    path("p/<slug:slug>/review/", review_views.review_page, name="review"),
    path("p/<slug:slug>/review/settle/", review_views.settle, name="settle"),
    path("p/<slug:slug>/quality/", review_views.quality_settings, name="quality_settings"),
    path("p/<slug:slug>/comparisons/<int:comparison_id>/", views.comparison_page, name="comparison"),
    path("p/<slug:slug>/export/", views.export_page, name="export"),
]
