"""The app's URLs plus the baseline: the same judgments, serializer and access check, paged the
way DRF does by default (PageNumberPagination: COUNT(*) and OFFSET on every page)."""

from django.urls import include, path
from rest_framework import generics
from rest_framework.pagination import PageNumberPagination

from annotate.access import get_project_for_manager
from annotate.models import Judgment
from annotate.serializers import JudgmentSerializer


class Pages(PageNumberPagination):
    page_size_query_param = "page_size"


class BaselineJudgments(generics.ListAPIView):
    serializer_class = JudgmentSerializer
    pagination_class = Pages

    def get_queryset(self):
        project, _ = get_project_for_manager(self.request, "bench")
        return Judgment.objects.filter(project=project).select_related("annotator", "comparison").order_by("id")


urlpatterns = [
    path("bench-baseline/judgments/", BaselineJudgments.as_view()),
    path("", include("config.urls")),
]
