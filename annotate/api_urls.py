"""Routes of the REST API (/api/v1/): tokens, projects, prompts, candidates, comparisons, judgments,
the queue (next, skip, undo), quality control (gold, settling, annotator statistics, bias), export
and webhooks, plus the OpenAPI schema and its docs page."""

from django.urls import path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import api


class IdConverter:
    """An id that fits a bigint: a longer number is no route (404), not a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(value)


register_converter(IdConverter, "id")

project = "projects/<slug:slug>/"
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("tokens/", api.TokenList.as_view(), name="api-tokens"),
    path("tokens/<id:pk>/", api.TokenDetail.as_view(), name="api-token"),
    path("projects/", api.ProjectList.as_view(), name="api-projects"),
    path(project, api.ProjectDetail.as_view(), name="api-project"),
    path(project + "prompts/", api.PromptList.as_view(), name="api-prompts"),
    path(project + "candidates/", api.CandidateList.as_view(), name="api-candidates"),
    path(project + "comparisons/", api.ComparisonList.as_view(), name="api-comparisons"),
    path(project + "comparisons/<id:pk>/", api.ComparisonDetail.as_view(), name="api-comparison"),
    path(project + "comparisons/<id:pk>/gold/", api.ComparisonGold.as_view(), name="api-comparison-gold"),
    path(project + "comparisons/<id:pk>/settle/", api.ComparisonSettle.as_view(), name="api-comparison-settle"),
    path(project + "annotators/", api.AnnotatorStatistics.as_view(), name="api-annotators"),
    path(project + "bias/", api.BiasReport.as_view(), name="api-bias"),
    path(project + "judgments/", api.JudgmentList.as_view(), name="api-judgments"),
    path(project + "next/", api.NextComparison.as_view(), name="api-next"),
    path(project + "skip/", api.SkipComparison.as_view(), name="api-skip"),
    path(project + "undo/", api.UndoJudgment.as_view(), name="api-undo"),
    path(project + "export/", api.ExportView.as_view(), name="api-export"),
    path(project + "webhooks/", api.WebhookList.as_view(), name="api-webhooks"),
    path(project + "webhooks/<id:pk>/", api.WebhookDetail.as_view(), name="api-webhook"),
    path(project + "webhooks/<id:pk>/deliveries/", api.DeliveryList.as_view(), name="api-deliveries"),
]
