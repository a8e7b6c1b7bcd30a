"""REST API for jobs and checkpoints (managers and owners of the job's project)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import Membership, Project, Role

from . import jobs
from .models import Checkpoint, DatasetSnapshot, Job, JobMetric


def managed_projects(user):
    return Project.objects.filter(memberships__user=user, memberships__role__in=[Role.OWNER, Role.MANAGER])


def job_for(request, pk) -> Job:
    """404 for a job of a project the caller is not in; 403 for an annotator of it."""
    job = get_object_or_404(Job.objects.select_related("project"), pk=pk,
                            project__memberships__user=request.user)
    if not Membership.objects.filter(project=job.project, user=request.user,
                                     role__in=[Role.OWNER, Role.MANAGER]).exists():
        from rest_framework.exceptions import PermissionDenied

        raise PermissionDenied("Only the project's owners and managers control jobs.")
    return job


class JobSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    checkpoint = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "project", "kind", "status", "queue", "config", "progress", "message", "error", "result",
                  "attempt", "worker", "parent", "checkpoint", "created_at", "started_at", "heartbeat_at",
                  "finished_at"]
        read_only_fields = fields

    def get_checkpoint(self, job) -> int | None:
        checkpoint = getattr(job, "checkpoint", None)
        return checkpoint.pk if checkpoint else None


class LaunchSerializer(serializers.Serializer):
    project = serializers.SlugField()
    kind = serializers.ChoiceField(choices=Job.Kind.values)
    config = serializers.DictField(required=False, default=dict)
    queue = serializers.ChoiceField(choices=["default", "cpu", "gpu"], required=False, allow_null=True, default=None)


class MetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["step", "name", "value"]


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSnapshot
        fields = ["id", "sha256", "format", "rows", "judgment_watermark", "judgments", "comparisons", "created_at"]


class CheckpointSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    snapshots = SnapshotSerializer(many=True, read_only=True)
    lineage = serializers.SerializerMethodField(help_text="Ids from this checkpoint back to the first ancestor.")

    class Meta:
        model = Checkpoint
        fields = ["id", "project", "kind", "name", "base_model", "path", "parent", "reward_model", "job", "snapshots",
                  "lineage", "metrics", "config", "size_bytes", "created_at"]
        read_only_fields = fields

    def get_lineage(self, checkpoint) -> list[int]:
        return [c.pk for c in checkpoint.lineage()]


class JobFilter(filters.FilterSet):
    project = filters.CharFilter(field_name="project__slug")

    class Meta:
        model = Job
        fields = ["kind", "status"]


@extend_schema_view(
    get=extend_schema(summary="Jobs of the projects you manage"),
    post=extend_schema(summary="Launch a job; a bad config is refused (400) naming the field",
                       request=LaunchSerializer, responses={201: JobSerializer}),
)
class JobList(generics.ListCreateAPIView):
    serializer_class = JobSerializer
    filterset_class = JobFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return Job.objects.filter(project__in=managed_projects(self.request.user)).select_related(
            "project", "checkpoint")

    def create(self, request, *args, **kwargs):
        data = LaunchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        project = Project.objects.filter(slug=values["project"], memberships__user=request.user).first()
        if project is None:
            raise ValidationError({"project": "No such project among yours."})
        if not Membership.objects.filter(project=project, user=request.user,
                                         role__in=[Role.OWNER, Role.MANAGER]).exists():
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied("Only the project's owners and managers launch jobs.")
        try:
            job = jobs.launch(project, values["kind"], values["config"], user=request.user, queue=values["queue"])
        except jobs.LaunchRefused as exc:
            raise ValidationError({f"config.{exc.field}" if exc.field else "detail": exc.message}) from None
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    @extend_schema(summary="A job", responses=JobSerializer)
    def get(self, request, pk):
        return Response(JobSerializer(job_for(request, pk)).data)


class JobMetrics(generics.ListAPIView):
    serializer_class = MetricSerializer
    pagination_class = None

    @extend_schema(summary="A job's metric series (all points)")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return JobMetric.objects.none()
        return JobMetric.objects.filter(job=job_for(self.request, self.kwargs["pk"])).order_by("name", "step")


class JobCancel(APIView):
    @extend_schema(summary="Cancel: at once if queued, at the next step boundary if running", request=None,
                   responses=JobSerializer)
    def post(self, request, pk):
        return Response(JobSerializer(jobs.cancel(job_for(request, pk))).data)


class JobRetry(APIView):
    @extend_schema(summary="Queue a failed or cancelled job again", request=None,
                   responses={200: JobSerializer, 409: OpenApiResponse(description="Not failed or cancelled")})
    def post(self, request, pk):
        try:
            job = jobs.retry(job_for(request, pk))
        except jobs.LaunchRefused as exc:
            return Response({"detail": exc.message}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data)


class CheckpointFilter(filters.FilterSet):
    project = filters.CharFilter(field_name="project__slug")

    class Meta:
        model = Checkpoint
        fields = ["kind"]


@extend_schema_view(get=extend_schema(summary="Checkpoints of the projects you manage"))
class CheckpointList(generics.ListAPIView):
    serializer_class = CheckpointSerializer
    filterset_class = CheckpointFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Checkpoint.objects.none()
        return Checkpoint.objects.filter(project__in=managed_projects(self.request.user)).select_related(
            "project").prefetch_related("snapshots")


class CheckpointDetail(APIView):
    @extend_schema(summary="A checkpoint with its lineage", responses=CheckpointSerializer)
    def get(self, request, pk):
        checkpoint = get_object_or_404(Checkpoint, pk=pk, project__in=managed_projects(request.user))
        return Response(CheckpointSerializer(checkpoint).data)
