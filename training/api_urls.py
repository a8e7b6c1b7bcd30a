"""URLs of the jobs API under /api/v1/."""

from django.urls import path

import annotate.api_urls  # noqa: F401 -- registers the "id" path converter these routes use

from . import api, ranking_api

urlpatterns = [
    path("jobs/", api.JobList.as_view(), name="api-jobs"),
    path("jobs/<id:pk>/", api.JobDetail.as_view(), name="api-job"),
    path("jobs/<id:pk>/metrics/", api.JobMetrics.as_view(), name="api-job-metrics"),
    path("jobs/<id:pk>/cancel/", api.JobCancel.as_view(), name="api-job-cancel"),
    path("jobs/<id:pk>/retry/", api.JobRetry.as_view(), name="api-job-retry"),
    path("checkpoints/", api.CheckpointList.as_view(), name="api-checkpoints"),
    path("checkpoints/<id:pk>/", api.CheckpointDetail.as_view(), name="api-checkpoint"),
    path("projects/<slug:slug>/leaderboard/", ranking_api.LeaderboardView.as_view(), name="api-leaderboard"),
    path("projects/<slug:slug>/reward-head/", ranking_api.RewardHeadView.as_view(), name="api-reward-head"),
]
