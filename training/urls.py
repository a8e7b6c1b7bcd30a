"""URLs of the job, model and round pages."""

from django.urls import path

from . import head_views, leaderboard_views, views

urlpatterns = [
    path("p/<slug:slug>/jobs/", views.jobs_page, name="jobs"),
    path("p/<slug:slug>/jobs/list/", views.jobs_list_fragment, name="jobs_fragment"),
    path("p/<slug:slug>/jobs/<int:job_id>/", views.job_page, name="job"),
    path("p/<slug:slug>/jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("p/<slug:slug>/jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
    path("p/<slug:slug>/jobs/<int:job_id>/plot.png", views.job_plot, name="job_plot"),
    path("p/<slug:slug>/rounds/next/", views.round_launch, name="round_launch"),
    path("p/<slug:slug>/models/", views.models_page, name="models"),
    path("p/<slug:slug>/models/<int:checkpoint_id>/", views.model_page, name="model"),
    path("p/<slug:slug>/leaderboard/", leaderboard_views.leaderboard_page, name="leaderboard"),
    path("p/<slug:slug>/leaderboard/plot.png", leaderboard_views.leaderboard_plot, name="leaderboard_plot"),
    path("p/<slug:slug>/reward-head/", head_views.head_settings, name="head_settings"),
]
