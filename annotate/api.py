"""REST API v1. Every call is authenticated (session or personal token) and authorised through
the same access helpers as the pages: non-members get 404, annotators 403 on management calls."""

from __future__ import annotations

import secrets

from django.db import connection, transaction
from django.db.models import Max
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound as ApiNotFound
from rest_framework.exceptions import PermissionDenied as ApiPermissionDenied
from rest_framework.exceptions import ValidationError
from rest_framework.fields import DateTimeField
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from rewards import quality as quality_stats

from . import export as exporting
from . import serializers as s
from .access import get_project_for_manager, get_project_for_member
from .actions import (
    MAX_MS_SPENT,
    MAX_RATIONALE,
    ActionError,
    JudgmentInput,
    do_create_project,
    do_skip,
    do_submit_judgment,
    do_undo_last_judgment,
    do_update_project,
)
from .db import on_postgresql
from .importing import ImportFailed, ParsedRow, import_rows
from .models import (
    ApiToken,
    Candidate,
    Comparison,
    Judgment,
    Membership,
    Project,
    Prompt,
    Strength,
    Webhook,
    WebhookDelivery,
    content_hash,
)
from .quality import annotator_statistics, bias_report
from .queue import next_comparison_for
from .review import do_mark_gold, do_settle
from .tokens import create_token, revoke_token
from .watermarks import horizon


def id_filter(field_name: str, lookup_expr: str = "exact", **kwargs) -> filters.NumberFilter:
    """A number filter bounded to what the database column holds, so a huge number is a 400."""
    return filters.NumberFilter(field_name=field_name, lookup_expr=lookup_expr, min_value=0, max_value=s.MAX_ID,
                                **kwargs)


def _member(request, slug):
    return get_project_for_member(request, slug)


def _manager(request, slug):
    return get_project_for_manager(request, slug)


def _raise_api(exc: ActionError):
    if exc.status == 404:
        raise ApiNotFound(exc.message)
    if exc.status == 403:
        raise ApiPermissionDenied(exc.message)
    raise ValidationError(exc.errors or {"detail": exc.message})


# --- projects ----------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(summary="Projects you are a member of"),
    post=extend_schema(summary="Create a project (staff)", request=s.ProjectCreateSerializer,
                       responses={201: s.ProjectSerializer}),
)
class ProjectList(generics.ListCreateAPIView):
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        return Project.objects.filter(memberships__user=self.request.user).prefetch_related("criteria")

    def get_serializer_context(self):
        roles = dict(Membership.objects.filter(user=self.request.user).values_list("project_id", "role"))
        return {**super().get_serializer_context(), "roles": roles}

    def create(self, request, *args, **kwargs):
        if not request.user.is_staff:
            raise ApiPermissionDenied("Only staff accounts create projects.")
        data = s.ProjectCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            project = do_create_project(request.user, **data.validated_data)
        except ActionError as exc:
            _raise_api(exc)
        return Response(s.ProjectSerializer(project, context={"roles": {project.pk: "owner"}}).data,
                        status=status.HTTP_201_CREATED)


class ProjectDetail(APIView):
    @extend_schema(summary="A project", responses=s.ProjectSerializer)
    def get(self, request, slug):
        project, membership = _member(request, slug)
        return Response(s.ProjectSerializer(project, context={"roles": {project.pk: membership.role}}).data)

    @extend_schema(summary="Change a project's settings (manager)", request=s.ProjectUpdateSerializer,
                   responses=s.ProjectSerializer)
    def patch(self, request, slug):
        project, membership = _manager(request, slug)
        data = s.ProjectUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        criteria = values.get("criteria")
        if criteria is None:
            criteria = list(project.criteria.values("key", "label", "description", "scale_min", "scale_max",
                                                    "required"))
        try:
            project = do_update_project(
                project, name=values.get("name", project.name),
                instructions=values.get("instructions", project.instructions),
                votes_wanted=values.get("votes_wanted", project.votes_wanted), criteria=[dict(c) for c in criteria],
            )
        except ActionError as exc:
            _raise_api(exc)
        return Response(s.ProjectSerializer(project, context={"roles": {project.pk: membership.role}}).data)


# --- prompts, candidates, comparisons (managers) --------------------------------------------------


class PromptFilter(filters.FilterSet):
    since_id = id_filter("id", "gt")

    class Meta:
        model = Prompt
        fields = ["external_id"]


@extend_schema_view(get=extend_schema(summary="Prompts (manager)"),
                    post=extend_schema(summary="Add a prompt (manager); an existing one is returned with 200"))
class PromptList(generics.ListCreateAPIView):
    serializer_class = s.PromptSerializer
    filterset_class = PromptFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Prompt.objects.none()
        project, _ = _manager(self.request, self.kwargs["slug"])
        return Prompt.objects.filter(project=project)

    def create(self, request, *args, **kwargs):
        project, _ = _manager(request, kwargs["slug"])
        data = s.PromptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        messages = [dict(m) for m in data.validated_data.get("messages") or []] or None
        text = data.validated_data.get("text") or ""
        if messages and not text:
            text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        digest = content_hash(messages or text)
        prompt, created = Prompt.objects.get_or_create(
            project=project, content_hash=digest,
            defaults={"text": text, "messages": messages, "external_id": data.validated_data.get("external_id", "")},
        )
        if messages and not project.conversational:
            type(project).objects.filter(pk=project.pk).update(conversational=True)
        return Response(s.PromptSerializer(prompt).data, status=201 if created else 200)


class CandidateFilter(filters.FilterSet):
    since_id = id_filter("id", "gt")
    prompt = id_filter("prompt_id")

    class Meta:
        model = Candidate
        fields = ["source"]


@extend_schema_view(get=extend_schema(summary="Responses (manager)"),
                    post=extend_schema(summary="Add a response to a prompt (manager); an existing one returns 200"))
class CandidateList(generics.ListCreateAPIView):
    serializer_class = s.CandidateSerializer
    filterset_class = CandidateFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Candidate.objects.none()
        project, _ = _manager(self.request, self.kwargs["slug"])
        return Candidate.objects.filter(prompt__project=project)

    def create(self, request, *args, **kwargs):
        project, _ = _manager(request, kwargs["slug"])
        data = s.CandidateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        prompt = Prompt.objects.filter(project=project, pk=data.validated_data["prompt_id"]).first()
        if prompt is None:
            raise ValidationError({"prompt": "No such prompt in this project."})
        text = data.validated_data["text"]
        candidate, created = Candidate.objects.get_or_create(
            prompt=prompt, content_hash=content_hash(text),
            defaults={"text": text, "source": data.validated_data.get("source", "")},
        )
        return Response(s.CandidateSerializer(candidate).data, status=201 if created else 200)


class ComparisonFilter(filters.FilterSet):
    since_id = id_filter("id", "gt")
    prompt = id_filter("prompt_id")
    round = filters.NumberFilter(field_name="round", min_value=0, max_value=s.MAX_SMALL)

    class Meta:
        model = Comparison
        fields = ["status", "origin"]


@extend_schema_view(
    get=extend_schema(summary="Comparisons (manager)"),
    post=extend_schema(summary="Create up to 10,000 comparisons in one atomic call (manager)",
                       description="One invalid item refuses the whole call and writes nothing; the errors name "
                                   "each item by its index. Existing prompts, responses and pairs are reused.",
                       request=s.BulkComparisonsSerializer, responses={201: s.BulkResultSerializer}),
)
class ComparisonList(generics.ListCreateAPIView):
    serializer_class = s.ComparisonSerializer
    filterset_class = ComparisonFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Comparison.objects.none()
        project, _ = _manager(self.request, self.kwargs["slug"])
        return Comparison.objects.filter(project=project)

    def create(self, request, *args, **kwargs):
        project, _ = _manager(request, kwargs["slug"])
        data = s.BulkComparisonsSerializer(data=request.data)
        if not data.is_valid():
            errors = data.errors
            items = errors.get("items")
            if isinstance(items, list):  # name the bad items by index, not by position in a long list
                errors = {**errors, "items": {str(i): e for i, e in enumerate(items) if e}}
            raise ValidationError(errors)
        rows = []
        for index, item in enumerate(data.validated_data["items"]):
            prompt = item["prompt"]
            messages = prompt if isinstance(prompt, list) else None
            text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) if messages else prompt
            rows.append(ParsedRow(
                text, messages, [(item["response_a"], item["source_a"]), (item["response_b"], item["source_b"])],
                [(0, 1, item["preference"])], item["id"], priority=item["priority"], origin=item["origin"],
                round=item["round"], votes_wanted=item["votes_wanted"], item=index,
            ))
        try:
            result, ids = import_rows(project, rows, labels=data.validated_data["labels"], user=request.user,
                                      filename="api")
        except ImportFailed as exc:
            raise ValidationError({"items": str(exc)}) from None
        body = {"comparisons": [ids.get(i) for i in range(len(rows))], "created": result.comparisons_added,
                "prompts_added": result.prompts_added, "candidates_added": result.candidates_added,
                "judgments_added": result.judgments_added}
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(summary="A comparison (manager)"),
                    patch=extend_schema(summary="Change priority, votes wanted, or retire / reopen (manager)"))
class ComparisonDetail(generics.RetrieveUpdateAPIView):
    serializer_class = s.ComparisonSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self):
        project, _ = _manager(self.request, self.kwargs["slug"])
        return get_object_or_404(Comparison, project=project, pk=self.kwargs["pk"])

    def perform_update(self, serializer):
        with transaction.atomic():
            comparison = serializer.save()
            if comparison.status != Comparison.Status.RETIRED:
                done = comparison.votes >= comparison.votes_wanted
                wanted = Comparison.Status.COMPLETE if done else Comparison.Status.OPEN
                Comparison.objects.filter(pk=comparison.pk).update(status=wanted)
                comparison.status = wanted


# --- judging -----------------------------------------------------------------------------------


class JudgmentFilter(filters.FilterSet):
    since_id = id_filter("id", "gt", label="Judgments after this id (on PostgreSQL a judgment that commits late "
                                           "with a lower id is missed: poll with since_tx instead)")
    since_tx = filters.NumberFilter(method="no_filter", min_value=0, max_value=s.MAX_ID, label=(
        "Commit-safe polling: judgments committed since this token (0 to start). The answer's "
        "X-Prefloop-Next-Since-Tx header is the token for the next poll; a late commit is never skipped."))
    until_tx = filters.NumberFilter(method="no_filter", min_value=0, max_value=s.MAX_ID, label=(
        "With since_tx: the end of the window, set in the page links so every page reads the same window."))
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Made at or after")
    annotator = filters.CharFilter(field_name="annotator__username")
    origin = filters.ChoiceFilter(field_name="comparison__origin", choices=Comparison.Origin.choices)
    round = filters.NumberFilter(field_name="comparison__round", min_value=0, max_value=s.MAX_SMALL)
    comparison = id_filter("comparison_id")

    class Meta:
        model = Judgment
        fields = ["choice"]

    def no_filter(self, queryset, name, value):  # applied in JudgmentList.since_tx_window
        return queryset


@extend_schema_view(
    get=extend_schema(summary="Judgments: yours (annotator) or everyone's (manager)"),
    post=extend_schema(
        summary="Record a judgment for the comparison you hold",
        request=s.JudgmentSubmitSerializer,
        responses={201: s.JudgmentSerializer, 200: OpenApiResponse(s.JudgmentSerializer, "Recorded before (a retry)"),
                   409: OpenApiResponse(description="You do not hold this comparison")},
    ),
)
class JudgmentList(generics.ListCreateAPIView):
    serializer_class = s.JudgmentSerializer
    filterset_class = JudgmentFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Judgment.objects.none()
        project, membership = _member(self.request, self.kwargs["slug"])
        judgments = Judgment.objects.filter(project=project).select_related("annotator", "comparison")
        self.sees_origin = membership.can_manage
        if not membership.can_manage:
            # Gold must not be recognisable to the annotator: no origin filter, no origin column.
            if "origin" in self.request.query_params:
                raise ValidationError({"origin": ["Filtering by origin is for the project's managers."]})
            judgments = judgments.filter(annotator=self.request.user)
        return judgments

    # The list is what sync scripts poll: rows are read as tuples and shaped here, not through
    # model instances and the serializer's per-field machinery (1.9x the requests per second,
    # docs/benchmarks.md). The shape is JudgmentSerializer's, which documents it.
    LIST_COLUMNS = ("id", "comparison_id", "annotator__username", "choice", "strength", "rubric_scores", "rationale",
                    "shown_left", "ms_spent", "created_at", "comparison__origin", "comparison__round")
    LIST_NAMES = ("id", "comparison", "annotator", "choice", "strength", "rubric_scores", "rationale", "shown_left",
                  "ms_spent", "created_at", "origin", "round")

    def since_tx_window(self, judgments):
        """The judgments written by transactions in [since_tx, until_tx): until_tx is the commit
        horizon (annotate.watermarks) when the poll starts, so every transaction below it has ended
        and nothing can still commit into the window. On SQLite (one writer at a time, ids commit in
        order) the token is an id bound instead. Returns the filtered rows and the window's end."""
        params = self.request.query_params
        if "since_tx" not in params:
            return judgments, None
        start = int(float(params["since_tx"]))  # validated by the filter set
        until = int(float(params["until_tx"])) if params.get("until_tx") else None
        if on_postgresql():
            until = until if until is not None else horizon()
            return judgments.extra(where=["annotate_judgment.txid >= %s", "annotate_judgment.txid < %s"],
                                   params=[start, until]), until
        if until is None:
            until = (Judgment.objects.aggregate(top=Max("id"))["top"] or 0) + 1
        return judgments.filter(id__gte=start, id__lt=until), until

    def list(self, request, *args, **kwargs):
        judgments, until = self.since_tx_window(self.filter_queryset(self.get_queryset()))
        rows = judgments.values(*self.LIST_COLUMNS)
        page = self.paginate_queryset(rows)
        results = []
        for row in page:
            item = {name: row[column] for name, column in zip(self.LIST_NAMES, self.LIST_COLUMNS, strict=True)}
            created = item["created_at"].isoformat()
            item["created_at"] = created[:-6] + "Z" if created.endswith("+00:00") else created
            if not self.sees_origin:
                item["origin"] = None
            results.append(item)
        response = self.get_paginated_response(results)
        if until is not None:
            if response.data.get("next"):  # every page of this poll reads the same window
                response.data["next"] = replace_query_param(response.data["next"], "until_tx", until)
            response["X-Prefloop-Next-Since-Tx"] = str(until)
        return response

    def create(self, request, *args, **kwargs):
        project, membership = _member(request, kwargs["slug"])
        values = plain_judgment_values(request.data)
        if values is None:  # anything unusual goes through the serializer, which names what is wrong
            data = s.JudgmentSubmitSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            values = data.validated_data
        try:
            result = do_submit_judgment(project, request.user, JudgmentInput(
                comparison_id=values["comparison"], choice=values["choice"], strength=values["strength"],
                rubric=values["rubric"], rationale=values["rationale"], ms_spent=values["ms_spent"],
            ))
        except ActionError as exc:
            if exc.status == 409:
                return Response({"detail": exc.message}, status=status.HTTP_409_CONFLICT)
            _raise_api(exc)
        if result.created:
            body = judgment_body(result.judgment, request.user)
        else:
            judgment = Judgment.objects.select_related("annotator", "comparison").get(pk=result.judgment.pk)
            body = s.JudgmentSerializer(judgment).data
        if not membership.can_manage:
            body["origin"] = None  # gold is never recognisable to the annotator
        return Response(body, status=201 if result.created else 200)


# The two calls every judging cycle makes (`next`, then the judgment) build their answers directly:
# through the serializers they cost more Python than the queue's SQL (docs/benchmarks.md). The
# serializers still document them in the schema; tests/test_api.py holds the shapes equal.
_DATETIME = DateTimeField()


_JUDGMENT_KEYS = {"comparison", "choice", "strength", "rubric", "rationale", "ms_spent"}
_STRENGTHS = {None, *Strength.values}


def _plain_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def plain_judgment_values(data) -> dict | None:
    """JudgmentSubmitSerializer's validated data for the common body (no rubric), checked by hand,
    or None for anything else. The serializer deep-copies its nested rubric fields on every call,
    which cost more than the judgment's SQL; a test holds the two equal on valid bodies."""
    if type(data) is not dict or not data.keys() <= _JUDGMENT_KEYS:
        return None
    comparison, choice = data.get("comparison"), data.get("choice")
    strength, rubric, ms_spent = data.get("strength"), data.get("rubric", {}), data.get("ms_spent")
    rationale = data.get("rationale", "")
    if not (_plain_int(comparison, 1, s.MAX_ID) and choice in ("left", "right", "tie")
            and (strength is None or type(strength) is str and strength in _STRENGTHS)
            and rubric == {} and (ms_spent is None or _plain_int(ms_spent, 0, MAX_MS_SPENT))
            and type(rationale) is str and len(rationale) <= MAX_RATIONALE and "\x00" not in rationale
            and rationale.isascii()):
        return None
    return {"comparison": comparison, "choice": choice, "strength": strength, "rubric": {},
            "rationale": rationale.strip(), "ms_spent": ms_spent}


def judgment_body(judgment: Judgment, annotator) -> dict:
    """JudgmentSerializer's shape for a judgment just recorded (one small query for the origin)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT origin, round FROM annotate_comparison WHERE id = %s", [judgment.comparison_id])
        origin, round_ = cursor.fetchone()
    return {"id": judgment.pk, "comparison": judgment.comparison_id, "annotator": annotator.username,
            "choice": judgment.choice, "strength": judgment.strength, "rubric_scores": judgment.rubric_scores,
            "rationale": judgment.rationale, "shown_left": judgment.shown_left, "ms_spent": judgment.ms_spent,
            "created_at": _DATETIME.to_representation(judgment.created_at), "origin": origin, "round": round_}


def assignment_body(project: Project, lease) -> dict:
    """AssignmentSerializer's shape for a lease."""
    comparison = lease.comparison
    a, b = comparison.candidate_a, comparison.candidate_b
    left, right = (a, b) if lease.shown_left == "a" else (b, a)
    messages = comparison.prompt.messages
    return {
        "comparison": comparison.pk,
        "prompt": {"text": comparison.prompt.text,
                   "messages": None if messages is None else [{"role": m["role"], "content": str(m["content"])}
                                                              for m in messages]},
        "left": {"text": left.text}, "right": {"text": right.text},
        "lease_expires_at": _DATETIME.to_representation(lease.expires_at),
        "criteria": list(project.criteria.values("key", "label", "description", "scale_min", "scale_max",
                                                 "required")),
    }


class NextComparison(APIView):
    @extend_schema(summary="Lease the next comparison to judge (or the one you hold)",
                   responses={200: s.AssignmentSerializer, 204: OpenApiResponse(description="Nothing left for you")})
    def get(self, request, slug):
        project, _ = _member(request, slug)
        lease = next_comparison_for(project, request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(assignment_body(project, lease))


class SkipComparison(APIView):
    @extend_schema(summary="Skip the comparison you hold", request=s.ComparisonIdSerializer,
                   responses={204: None, 409: OpenApiResponse(description="You do not hold it")})
    def post(self, request, slug):
        project, _ = _member(request, slug)
        data = s.ComparisonIdSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            do_skip(project, request.user, data.validated_data["comparison"])
        except ActionError as exc:
            return Response({"detail": exc.message}, status=exc.status)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UndoJudgment(APIView):
    @extend_schema(summary="Undo your last judgment (within the undo window); the comparison is yours again",
                   request=None, responses={200: s.AssignmentSerializer,
                                            400: OpenApiResponse(description="Nothing to undo")})
    def post(self, request, slug):
        project, _ = _member(request, slug)
        try:
            do_undo_last_judgment(project, request.user)
        except ActionError as exc:
            return Response({"detail": exc.message}, status=exc.status)
        return NextComparison().get(request, slug)


# --- quality control -----------------------------------------------------------------------------


class ComparisonGold(APIView):
    @extend_schema(summary="Mark a comparison gold with its known answer, or unmark it (manager)",
                   request=s.GoldSerializer, responses={200: s.ComparisonSerializer})
    def post(self, request, slug, pk):
        project, _ = _manager(request, slug)
        data = s.GoldSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            comparison = do_mark_gold(project, pk, data.validated_data["gold_choice"])
        except ActionError as exc:
            _raise_api(exc)
        return Response(s.ComparisonSerializer(comparison).data)


class ComparisonSettle(APIView):
    @extend_schema(summary="Settle a comparison: a, b, tie or discard (reviewer, manager or owner)",
                   request=s.SettleSerializer, responses={201: s.SettlementSerializer})
    def post(self, request, slug, pk):
        project, membership = _member(request, slug)
        if not membership.can_review:
            raise ApiPermissionDenied("Only the project's reviewers, managers and owners can settle comparisons.")
        data = s.SettleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            settlement = do_settle(project, request.user, pk, data.validated_data["decision"],
                                   data.validated_data["note"])
        except ActionError as exc:
            _raise_api(exc)
        return Response(s.SettlementSerializer(settlement).data, status=status.HTTP_201_CREATED)


def include_simulated(request) -> bool:
    """The `include_simulated` query parameter of the statistics calls (1 / true / 0 / false)."""
    query = s.SimulatedQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["include_simulated"]


class AnnotatorStatistics(APIView):
    @extend_schema(summary="Each annotator's quality figures, trust and flags (manager)",
                   description=quality_stats.__doc__, parameters=[s.SimulatedQuerySerializer],
                   responses={200: s.AnnotatorStatisticsSerializer(many=True)})
    def get(self, request, slug):
        project, _ = _manager(request, slug)
        return Response(annotator_statistics(project, include_simulated=include_simulated(request)))


class BiasReport(APIView):
    @extend_schema(summary="Position bias (project, annotators, rounds) and length bias (manager)",
                   parameters=[s.SimulatedQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug):
        project, _ = _manager(request, slug)
        return Response(bias_report(project, include_simulated=include_simulated(request)))


# --- export ------------------------------------------------------------------------------------


class ExportView(APIView):
    @extend_schema(
        summary="Export the project's judgments as a dataset (manager)",
        description=exporting.__doc__,
        parameters=[s.ExportQuerySerializer],
        responses={(200, "application/jsonl"): OpenApiTypes.BINARY},
    )
    def get(self, request, slug):
        project, _ = _manager(request, slug)
        query = s.ExportQuerySerializer(data=request.query_params)
        if not query.is_valid():
            errors = dict(query.errors)
            if "format" in errors:
                errors["format"] = [f"Known formats: {', '.join(exporting.EXPORT_FORMATS)}."]
            raise ValidationError(errors)
        q = query.validated_data
        options = exporting.ExportOptions(format=q["format"], votes=q["votes"], ties=q["ties"],
                                          since_id=q.get("since_id"), round=q.get("round"), origin=q.get("origin"),
                                          min_trust=q.get("min_trust"), exclude_flagged=q["exclude_flagged"],
                                          settled_only=q["settled_only"])
        exported = exporting.write_export(project, options)
        if q["file"] == "parquet":
            path, content_type, suffix = exporting.parquet_copy(exported), "application/vnd.apache.parquet", "parquet"
        elif q["gzip"]:
            path, content_type, suffix = exporting.gzip_copy(exported), "application/gzip", "jsonl.gz"
        else:
            path, content_type, suffix = exported.path, "application/jsonl", "jsonl"
        name = f"{project.slug}-{options.format}-{exported.version[:12]}.{suffix}"
        response = FileResponse(open(path, "rb"), content_type=content_type, as_attachment=True, filename=name)  # noqa: SIM115 -- FileResponse closes it
        response["X-Prefloop-Export-Version"] = f"sha256:{exported.version}"
        response["X-Prefloop-Export-Rows"] = str(exported.rows)
        response["ETag"] = f'"{exported.version}"'
        return response


# --- webhooks ----------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Webhooks (manager)"),
                    post=extend_schema(summary="Add a webhook (manager); its secret is shown once",
                                       responses={201: s.WebhookCreatedSerializer}))
class WebhookList(generics.ListCreateAPIView):
    serializer_class = s.WebhookSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Webhook.objects.none()
        project, _ = _manager(self.request, self.kwargs["slug"])
        return Webhook.objects.filter(project=project)

    def create(self, request, *args, **kwargs):
        project, _ = _manager(request, kwargs["slug"])
        data = s.WebhookSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        last = Judgment.objects.filter(project=project).order_by("-id").values_list("id", flat=True).first() or 0
        hook = data.save(project=project, secret=secrets.token_hex(32), last_judgment_id=last,
                         last_judgment_txid=horizon() or 0, created_by=request.user)
        return Response(s.WebhookCreatedSerializer(hook).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(summary="A webhook (manager)"),
                    patch=extend_schema(summary="Change a webhook (manager)"),
                    delete=extend_schema(summary="Delete a webhook (manager)"))
class WebhookDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = s.WebhookSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_object(self):
        project, _ = _manager(self.request, self.kwargs["slug"])
        return get_object_or_404(Webhook, project=project, pk=self.kwargs["pk"])


@extend_schema_view(get=extend_schema(summary="A webhook's delivery log (manager)"))
class DeliveryList(generics.ListAPIView):
    serializer_class = s.DeliverySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookDelivery.objects.none()
        project, _ = _manager(self.request, self.kwargs["slug"])
        hook = get_object_or_404(Webhook, project=project, pk=self.kwargs["pk"])
        return hook.deliveries.all()


# --- tokens ------------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Your API tokens"),
                    post=extend_schema(summary="Create an API token; the token is shown once",
                                       responses={201: s.TokenCreatedSerializer}))
class TokenList(generics.ListCreateAPIView):
    serializer_class = s.TokenSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    def create(self, request, *args, **kwargs):
        data = s.TokenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, secret = create_token(request.user, data.validated_data.get("name", ""))
        body = s.TokenCreatedSerializer(token).data
        body["token"] = secret
        return Response(body, status=status.HTTP_201_CREATED)


class TokenDetail(APIView):
    @extend_schema(summary="Revoke one of your API tokens", request=None, responses={204: None},
                   parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)])
    def delete(self, request, pk):
        token = get_object_or_404(ApiToken, pk=pk, user=request.user)
        revoke_token(token)
        return Response(status=status.HTTP_204_NO_CONTENT)
