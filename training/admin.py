"""Django admin for jobs, metrics, snapshots, checkpoints, scores and round records."""

from django.contrib import admin

from .models import CandidateScore, Checkpoint, DatasetSnapshot, GeneratedCandidate, Job, JobMetric, RoundPair


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "progress", "attempt", "worker", "created_at", "finished_at"]
    list_filter = ["status", "kind", "project"]
    readonly_fields = ["heartbeat_at", "started_at", "finished_at", "enqueued_at"]


@admin.register(JobMetric)
class JobMetricAdmin(admin.ModelAdmin):
    list_display = ["job", "name", "step", "value"]
    list_filter = ["name"]
    raw_id_fields = ["job"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "format", "rows", "judgment_watermark", "sha256", "created_at"]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "name", "base_model", "parent", "created_at"]
    list_filter = ["kind", "project"]
    raw_id_fields = ["parent", "reward_model", "job"]


@admin.register(CandidateScore)
class CandidateScoreAdmin(admin.ModelAdmin):
    list_display = ["candidate", "checkpoint", "score", "spread"]
    raw_id_fields = ["candidate", "checkpoint"]


@admin.register(GeneratedCandidate)
class GeneratedCandidateAdmin(admin.ModelAdmin):
    list_display = ["candidate", "checkpoint", "round", "role", "created_at"]
    list_filter = ["role", "round"]
    raw_id_fields = ["candidate", "checkpoint", "job"]


@admin.register(RoundPair)
class RoundPairAdmin(admin.ModelAdmin):
    list_display = ["comparison", "round", "new_candidate", "policy", "parent"]
    list_filter = ["round"]
    raw_id_fields = ["comparison", "new_candidate", "policy", "parent", "job"]
