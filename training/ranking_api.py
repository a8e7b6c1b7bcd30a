"""REST API of the leaderboard and the always-fresh reward head (every member reads; managers
change the head's settings)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.access import get_project_for_manager, get_project_for_member

from .head_views import apply_head_settings, parse_head_settings
from .leaderboard import JUDGES, leaderboard
from .models import RewardHead
from .reward_head import head_for, label_noise, status_of


class RatingSerializer(serializers.Serializer):
    source = serializers.CharField()
    rating = serializers.FloatField(allow_null=True, help_text="Elo scale; null: no battles (unranked)")
    ci_low = serializers.FloatField(allow_null=True, help_text="2.5th percentile of the bootstrap ratings")
    ci_high = serializers.FloatField(allow_null=True, help_text="97.5th percentile of the bootstrap ratings")
    battles = serializers.IntegerField()
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField()
    rank = serializers.IntegerField(allow_null=True, help_text="1 + sources whose interval lies wholly above")


class LeaderboardSerializer(serializers.Serializer):
    judges = serializers.ChoiceField(choices=JUDGES)
    battles = serializers.IntegerField()
    judgments = serializers.IntegerField()
    method = serializers.CharField()
    rows = RatingSerializer(many=True)


class LeaderboardView(APIView):
    @extend_schema(
        summary="Bradley–Terry ratings of every source that answered, with 95% bootstrap intervals",
        parameters=[OpenApiParameter("judges", str, enum=list(JUDGES), required=False,
                                     description="human (default): people's judgments; all: imported labels too")],
        responses=LeaderboardSerializer)
    def get(self, request, slug):
        project, _ = get_project_for_member(request, slug)
        judges = request.query_params.get("judges", "human")
        if judges not in JUDGES:
            raise ValidationError({"judges": f"must be one of {', '.join(JUDGES)}"})
        return Response(LeaderboardSerializer(leaderboard(project, judges)).data)


class NoiseSerializer(serializers.Serializer):
    judgment = serializers.IntegerField()
    annotator = serializers.CharField()
    comparison = serializers.IntegerField()
    choice = serializers.CharField()
    disagreement = serializers.FloatField(help_text="The probability the head gives the side not chosen")
    out_of_bag = serializers.BooleanField(help_text="From ensemble members that never saw this judgment")


class HeadSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=RewardHead.Status.values)
    message = serializers.CharField()
    orders_queue = serializers.BooleanField(help_text="False: the queue keeps its current order (see message)")
    enabled = serializers.BooleanField()
    refit_every = serializers.IntegerField(help_text="K: refit after this many new judgments")
    min_judgments = serializers.IntegerField()
    members = serializers.IntegerField()
    judgments = serializers.IntegerField()
    judgments_at_last_fit = serializers.IntegerField()
    fits = serializers.IntegerField()
    fitted_at = serializers.DateTimeField(allow_null=True)
    fit_seconds = serializers.FloatField(allow_null=True)
    pending_embeddings = serializers.IntegerField()
    metrics = serializers.DictField()
    label_noise = NoiseSerializer(many=True, help_text="The judgments the head disagrees with most")


class HeadUpdateSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    refit_every = serializers.IntegerField(required=False, min_value=1, max_value=100000)
    min_judgments = serializers.IntegerField(required=False, min_value=2, max_value=100000)
    members = serializers.IntegerField(required=False, min_value=1, max_value=32)


def _head_data(project) -> dict:
    return {**status_of(project), "label_noise": label_noise(project, limit=20)}


class RewardHeadView(APIView):
    @extend_schema(summary="The always-fresh reward head: whether it orders the queue, its last fit, label noise",
                   responses=HeadSerializer)
    def get(self, request, slug):
        project, _ = get_project_for_member(request, slug)
        return Response(HeadSerializer(_head_data(project)).data)

    @extend_schema(summary="Change the reward head's settings (manager)", request=HeadUpdateSerializer,
                   responses=HeadSerializer)
    def patch(self, request, slug):
        project, _ = get_project_for_manager(request, slug)
        data = HeadUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        head = head_for(project)
        values, errors = parse_head_settings(data.validated_data, head)
        if errors:
            raise ValidationError(errors)
        apply_head_settings(head, values)
        return Response(HeadSerializer(_head_data(project)).data)
