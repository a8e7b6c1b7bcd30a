"""REST API shapes. What an annotator receives never names a model: assignments carry texts only."""

from __future__ import annotations

from rest_framework import serializers

from .actions import MAX_MS_SPENT, MAX_RATIONALE
from .importing import LABEL_MODES
from .models import (
    ApiToken,
    Candidate,
    Choice,
    Comparison,
    Judgment,
    Project,
    Prompt,
    RubricCriterion,
    Strength,
    Webhook,
    WebhookDelivery,
)
from .webhooks import EVENTS, TargetRefused, resolve_target

MAX_BULK = 10_000
MAX_ID = 2**63 - 1  # a bigint; larger numbers are refused as input errors, not database errors
MAX_SMALL = 2**31 - 1


def id_field(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


class CriterionSerializer(serializers.ModelSerializer):
    class Meta:
        model = RubricCriterion
        fields = ["key", "label", "description", "scale_min", "scale_max", "required"]


class ProjectSerializer(serializers.ModelSerializer):
    criteria = CriterionSerializer(many=True, read_only=True)
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["slug", "name", "instructions", "votes_wanted", "conversational", "criteria", "role", "created_at"]
        read_only_fields = ["conversational", "created_at"]

    def get_role(self, project) -> str | None:
        return self.context.get("roles", {}).get(project.pk)


class ProjectCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(required=False, allow_blank=True, default="")
    votes_wanted = serializers.IntegerField(min_value=1, max_value=50, default=1)


class ProjectUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    instructions = serializers.CharField(required=False, allow_blank=True)
    votes_wanted = serializers.IntegerField(min_value=1, max_value=50, required=False)
    criteria = CriterionSerializer(many=True, required=False)


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(allow_blank=True)


class PromptSerializer(serializers.ModelSerializer):
    messages = ChatMessageSerializer(many=True, required=False, allow_null=True)

    class Meta:
        model = Prompt
        fields = ["id", "text", "messages", "external_id", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"text": {"required": False, "allow_blank": True}}

    def validate_messages(self, value):
        if value is not None and any(message is None for message in value):
            raise serializers.ValidationError("Each message must be a {role, content} object.")
        return value

    def validate(self, data):
        if not (data.get("text") or "").strip() and not data.get("messages"):
            raise serializers.ValidationError({"text": "Give the prompt's text or its chat messages."})
        return data


class CandidateSerializer(serializers.ModelSerializer):
    prompt = id_field(source="prompt_id")

    class Meta:
        model = Candidate
        fields = ["id", "prompt", "text", "source", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"text": {"allow_blank": True, "trim_whitespace": False}}


class ComparisonSerializer(serializers.ModelSerializer):
    class Meta:
        model = Comparison
        fields = ["id", "prompt", "candidate_a", "candidate_b", "priority", "votes_wanted", "votes", "status",
                  "origin", "round", "gold_choice", "created_at"]
        read_only_fields = ["id", "prompt", "candidate_a", "candidate_b", "votes", "origin", "round",
                            "gold_choice", "created_at"]
        extra_kwargs = {"votes_wanted": {"min_value": 1, "max_value": 50}}

    def validate_status(self, value):
        if value == Comparison.Status.COMPLETE:
            raise serializers.ValidationError("A comparison completes by its votes; set open or retired.")
        return value


class ComparisonItemSerializer(serializers.Serializer):
    """One comparison to create: a prompt (text or chat messages) and two responses."""

    prompt = serializers.JSONField(help_text="Text, or a list of {role, content} messages.")
    response_a = serializers.CharField(allow_blank=True, trim_whitespace=False)
    response_b = serializers.CharField(allow_blank=True, trim_whitespace=False)
    source_a = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    source_b = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    preference = serializers.ChoiceField(choices=Choice.values, required=False, allow_null=True, default=None)
    priority = serializers.FloatField(required=False, default=0.0)
    origin = serializers.ChoiceField(choices=Comparison.Origin.values, required=False, default=None, allow_null=True)
    round = serializers.IntegerField(min_value=0, max_value=MAX_SMALL, required=False, default=0)
    votes_wanted = serializers.IntegerField(min_value=1, max_value=50, required=False, allow_null=True, default=None)
    id = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    def validate_prompt(self, value):
        if isinstance(value, str):
            if not value.strip():
                raise serializers.ValidationError("The prompt is blank.")
            return value
        if isinstance(value, list):
            messages = ChatMessageSerializer(data=value, many=True)
            messages.is_valid(raise_exception=True)
            if not value:
                raise serializers.ValidationError("A chat prompt needs at least one message.")
            return [dict(m) for m in messages.validated_data]
        raise serializers.ValidationError("Give text or a list of {role, content} messages.")


class BulkComparisonsSerializer(serializers.Serializer):
    items = ComparisonItemSerializer(many=True, allow_empty=False, max_length=MAX_BULK)
    labels = serializers.ChoiceField(choices=LABEL_MODES, default="judgments",
                                     help_text="What `preference` becomes: imported votes, gold answers, or nothing.")


class BulkResultSerializer(serializers.Serializer):
    comparisons = serializers.ListField(child=serializers.IntegerField(allow_null=True),
                                        help_text="The comparison of each item, in order (null: identical responses).")
    created = serializers.IntegerField()
    prompts_added = serializers.IntegerField()
    candidates_added = serializers.IntegerField()
    judgments_added = serializers.IntegerField()


class JudgmentSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    origin = serializers.CharField(source="comparison.origin", read_only=True)
    round = serializers.IntegerField(source="comparison.round", read_only=True)

    class Meta:
        model = Judgment
        fields = ["id", "comparison", "annotator", "choice", "strength", "rubric_scores", "rationale", "shown_left",
                  "ms_spent", "created_at", "origin", "round"]
        read_only_fields = fields


class JudgmentSubmitSerializer(serializers.Serializer):
    """A judgment as the annotator saw the pair: `left` and `right` as in the assignment."""

    comparison = id_field()
    choice = serializers.ChoiceField(choices=["left", "right", "tie"])
    strength = serializers.ChoiceField(choices=Strength.values, required=False, allow_null=True, default=None)
    rubric = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField(allow_null=True)), required=False, default=dict,
        help_text='Per criterion key: {"left": score, "right": score}.',
    )
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=MAX_RATIONALE, default="")
    ms_spent = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_MS_SPENT,
                                        default=None)


class ComparisonIdSerializer(serializers.Serializer):
    comparison = id_field()


class TextSerializer(serializers.Serializer):
    text = serializers.CharField()


class AssignmentPromptSerializer(serializers.Serializer):
    text = serializers.CharField()
    messages = ChatMessageSerializer(many=True, allow_null=True)


class AssignmentSerializer(serializers.Serializer):
    """What an annotator judges: texts only, sides as they are to be shown."""

    comparison = serializers.IntegerField()
    prompt = AssignmentPromptSerializer()
    left = TextSerializer()
    right = TextSerializer()
    lease_expires_at = serializers.DateTimeField()
    criteria = CriterionSerializer(many=True)


class WebhookSerializer(serializers.ModelSerializer):
    events = serializers.MultipleChoiceField(choices=EVENTS)

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "every_n_judgments", "active", "last_judgment_id", "created_at"]
        read_only_fields = ["id", "last_judgment_id", "created_at"]
        extra_kwargs = {"every_n_judgments": {"min_value": 1, "max_value": 1_000_000}}

    def validate_url(self, value):
        try:
            resolve_target(value)  # checked again at each delivery (DNS rebinding)
        except TargetRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "events" in values:
            values["events"] = sorted(values["events"])
        return values


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: the HMAC key for X-Prefloop-Signature.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "payload", "status", "attempts", "last_status_code", "last_error", "created_at",
                  "delivered_at"]
        read_only_fields = fields


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["trl-preference", "trl-unpaired", "rubric", "raw"])
    votes = serializers.ChoiceField(choices=["majority", "all", "weighted"], default="majority")
    ties = serializers.ChoiceField(choices=["drop", "keep"], default="drop")
    file = serializers.ChoiceField(choices=["jsonl", "parquet"], default="jsonl")
    gzip = serializers.BooleanField(default=False)
    since_id = serializers.IntegerField(required=False, min_value=0, max_value=MAX_ID)
    round = serializers.IntegerField(required=False, min_value=0, max_value=MAX_SMALL)
    origin = serializers.ChoiceField(choices=Comparison.Origin.values, required=False)
    min_trust = serializers.FloatField(required=False, min_value=0, max_value=1,
                                       help_text="Leave out judgments of annotators whose trust is below this.")
    exclude_flagged = serializers.BooleanField(default=False,
                                               help_text="Leave out noise-flagged judgments and flagged annotators.")
    settled_only = serializers.BooleanField(default=False, help_text="Only comparisons a reviewer settled.")


class GoldSerializer(serializers.Serializer):
    gold_choice = serializers.ChoiceField(choices=["a", "b", "tie"], allow_null=True,
                                          help_text="The known answer; null unmarks the comparison as gold.")


class SettleSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["a", "b", "tie", "discard"])
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class SettlementSerializer(serializers.Serializer):
    comparison = serializers.IntegerField(source="comparison_id")
    reviewer = serializers.CharField(source="reviewer.username")
    decision = serializers.CharField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class SimulatedQuerySerializer(serializers.Serializer):
    include_simulated = serializers.BooleanField(
        default=False, help_text="Include the judgments of simulated annotators (benchmarks); left out by default.")


class AnnotatorStatisticsSerializer(serializers.Serializer):
    """One annotator's quality figures; null where there is nothing to estimate from."""

    username = serializers.CharField()
    judgments = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    gold_count = serializers.IntegerField()
    majority_agreement = serializers.FloatField(allow_null=True)
    majority_count = serializers.IntegerField()
    left_rate = serializers.FloatField(allow_null=True)
    left_count = serializers.IntegerField()
    left_p_value = serializers.FloatField(allow_null=True)
    left_p_adjusted = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)
    too_fast_share = serializers.FloatField(allow_null=True)
    trust = serializers.FloatField(allow_null=True)
    flagged = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())
    simulated = serializers.BooleanField(help_text="A simulated annotator (listed only with include_simulated=1).")
