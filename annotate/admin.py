"""Django admin pages for the annotation models (support and inspection, not the product UI)."""

from django.contrib import admin

from .models import (
    Candidate,
    Comparison,
    ImportBatch,
    Judgment,
    Lease,
    Membership,
    Project,
    Prompt,
    RubricCriterion,
    Skip,
)


class CriterionInline(admin.TabularInline):
    model = RubricCriterion
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "votes_wanted", "conversational", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [CriterionInline, MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "simulated"]
    list_filter = ["role", "simulated", "project"]
    raw_id_fields = ["user"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "__str__", "external_id", "created_at"]
    list_filter = ["project"]
    search_fields = ["text", "external_id"]
    readonly_fields = ["content_hash"]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "source", "__str__"]
    list_filter = ["source"]
    search_fields = ["text", "source"]
    raw_id_fields = ["prompt"]
    readonly_fields = ["content_hash"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "origin", "round", "priority", "votes", "votes_wanted", "status"]
    list_filter = ["project", "status", "origin", "round"]
    raw_id_fields = ["prompt", "candidate_a", "candidate_b"]
    list_select_related = ["project"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "comparison", "annotator", "choice", "strength", "ms_spent", "created_at"]
    list_filter = ["project", "choice", "strength"]
    raw_id_fields = ["comparison", "annotator"]
    list_select_related = ["project", "annotator"]


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["comparison", "annotator", "shown_left", "issued_at", "expires_at"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Skip)
class SkipAdmin(admin.ModelAdmin):
    list_display = ["comparison", "annotator", "created_at"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(ImportBatch)
class ImportBatchAdmin(admin.ModelAdmin):
    list_display = ["created_at", "project", "filename", "format", "rows", "comparisons_added", "judgments_added"]
    list_filter = ["project", "format"]
