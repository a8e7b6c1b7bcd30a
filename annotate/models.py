"""Data of the annotation side. Thin models: writes live in `actions.py`, the queue in `queue.py`.

Every invariant that the database can hold is a constraint here, so a race or a bug elsewhere
ends in an IntegrityError rather than a wrong row."""

import hashlib
import json
import secrets

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


def content_hash(value: str | list | dict) -> str:
    """sha256 of a text (line endings normalised) or of a chat transcript in canonical JSON."""
    if isinstance(value, str):
        data = value.replace("\r\n", "\n")
    else:
        data = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def random_tiebreak() -> int:
    """Random order among comparisons of equal priority, fixed when the row is made."""
    return secrets.randbits(62)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MANAGER = "manager", "Manager"
    REVIEWER = "reviewer", "Reviewer"
    ANNOTATOR = "annotator", "Annotator"


class Choice(models.TextChoices):
    A = "a", "A"
    B = "b", "B"
    TIE = "tie", "Tie"


class Strength(models.TextChoices):
    SLIGHT = "slight", "Slightly better"
    CLEAR = "clear", "Clearly better"
    DECISIVE = "decisive", "Decisively better"


class Side(models.TextChoices):
    A = "a", "A"
    B = "b", "B"


class Decision(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    DISCARD = "discard", "Discard"


class ComparisonStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    RETIRED = "retired", "Retired"


class Origin(models.TextChoices):
    IMPORTED = "imported", "Imported"
    RANDOM = "random", "Random"
    ACTIVE = "active", "Active selection"
    GOLD = "gold", "Gold"
    ROUND = "round", "Policy round"


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="Markdown, shown to annotators.")
    votes_wanted = models.PositiveSmallIntegerField(
        default=1, help_text="Judgments wanted per comparison, from different annotators."
    )
    conversational = models.BooleanField(
        default=False, help_text="Prompts are chat transcripts; exports write chat-formatted rows."
    )
    gold_share = models.FloatField(
        default=0.0, help_text="Share of each annotator's queue drawn from gold comparisons (0 to 0.5)."
    )
    reviewers_settle_own = models.BooleanField(
        default=False, help_text="Reviewers may settle comparisons they judged themselves."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(votes_wanted__gte=1, votes_wanted__lte=50), name="project_votes_wanted_1_to_50"
            ),
            models.CheckConstraint(condition=Q(gold_share__gte=0, gold_share__lte=0.5), name="project_gold_share_0_to_half"),
        ]

    def __str__(self):
        return self.name


class RubricCriterion(models.Model):
    """One criterion annotators score for each response, e.g. helpfulness on 1..5."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="criteria")
    key = models.SlugField(max_length=40, help_text="Column name in exports.")
    label = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    scale_min = models.SmallIntegerField(default=1)
    scale_max = models.SmallIntegerField(default=5)
    required = models.BooleanField(default=False)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "rubric criteria"
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="criterion_key_unique_in_project"),
            models.CheckConstraint(condition=Q(scale_min__lt=F("scale_max")), name="criterion_scale_ordered"),
        ]

    def __str__(self):
        return f"{self.label} ({self.scale_min}-{self.scale_max})"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    simulated = models.BooleanField(
        default=False, help_text="A simulated annotator (benchmarks): left out of the annotators' statistics."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self):
        return f"{self.user} · {self.role} · {self.project}"

    @property
    def can_manage(self) -> bool:
        return self.role in (Role.OWNER, Role.MANAGER)

    @property
    def can_review(self) -> bool:
        return self.role in (Role.OWNER, Role.MANAGER, Role.REVIEWER)


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(help_text="Plain text; for a chat prompt, its last user turn.")
    messages = models.JSONField(
        null=True, blank=True, help_text="Chat transcript as a list of {role, content}, or empty."
    )
    content_hash = models.CharField(max_length=64)
    external_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_in_project"),
        ]

    def __str__(self):
        return self.text[:80]


class Candidate(models.Model):
    """A response to a prompt. `source` names its generator or checkpoint and is never shown to
    annotators."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt", "content_hash"], name="candidate_unique_per_prompt"),
        ]

    def __str__(self):
        return self.text[:80]


class Comparison(models.Model):
    Status = ComparisonStatus
    Origin = Origin

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    # Stored in canonical order (a.id < b.id) so one pair exists once; what the annotator sees
    # left is drawn per assignment and recorded on the lease and the judgment.
    candidate_a = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    priority = models.FloatField(default=0.0)
    tiebreak = models.BigIntegerField(default=random_tiebreak)
    votes_wanted = models.PositiveSmallIntegerField(default=1)
    votes = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ComparisonStatus.choices, default=ComparisonStatus.OPEN)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.IMPORTED)
    round = models.PositiveIntegerField(default=0)
    gold_choice = models.CharField(max_length=8, choices=Choice.choices, null=True, blank=True)
    # A reviewer's decision, which replaces the votes in export and training (the votes stay);
    # the history of decisions is in Settlement.
    settled_choice = models.CharField(max_length=8, choices=Decision.choices, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["candidate_a", "candidate_b"], name="comparison_pair_unique"),
            models.CheckConstraint(
                condition=Q(settled_choice__isnull=True) | Q(settled_choice__in=Decision.values),
                name="comparison_settled_choice_valid",
            ),
            models.CheckConstraint(condition=Q(candidate_a__lt=F("candidate_b")), name="comparison_pair_ordered"),
            models.CheckConstraint(
                condition=Q(votes_wanted__gte=1, votes_wanted__lte=50), name="comparison_votes_wanted_1_to_50"
            ),
            models.CheckConstraint(condition=Q(status__in=ComparisonStatus.values), name="comparison_status_valid"),
            models.CheckConstraint(condition=Q(origin__in=Origin.values), name="comparison_origin_valid"),
            models.CheckConstraint(
                condition=Q(gold_choice__isnull=True) | Q(gold_choice__in=Choice.values),
                name="comparison_gold_choice_valid",
            ),
        ]
        indexes = [
            # The queue: highest priority first, random among equals, open rows only.
            models.Index(
                "project",
                F("priority").desc(),
                "tiebreak",
                name="comparison_queue",
                condition=Q(status="open"),
            ),
            models.Index(fields=["project", "round"], name="comparison_round"),
        ]

    def __str__(self):
        return f"#{self.pk} prompt {self.prompt_id}: {self.candidate_a_id} vs {self.candidate_b_id}"


class Lease(models.Model):
    """Reserves a comparison for one annotator until `expires_at`; one per comparison at a time."""

    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, primary_key=True, related_name="lease")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    shown_left = models.CharField(max_length=1, choices=Side.choices)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(shown_left__in=Side.values), name="lease_shown_left_valid"),
            models.CheckConstraint(condition=Q(expires_at__gt=F("issued_at")), name="lease_expires_after_issue"),
        ]
        indexes = [models.Index(fields=["annotator", "expires_at"], name="lease_by_annotator")]

    def __str__(self):
        return f"comparison {self.comparison_id} → {self.annotator} until {self.expires_at:%H:%M:%S}"


class Judgment(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    choice = models.CharField(max_length=8, choices=Choice.choices)
    strength = models.CharField(max_length=10, choices=Strength.choices, null=True, blank=True)
    rubric_scores = models.JSONField(
        default=dict, blank=True, help_text='Per criterion key: {"a": score, "b": score}.'
    )
    rationale = models.TextField(blank=True)
    shown_left = models.CharField(max_length=1, choices=Side.choices, null=True, blank=True)
    ms_spent = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="one_judgment_per_annotator"),
            models.CheckConstraint(condition=Q(choice__in=Choice.values), name="judgment_choice_valid"),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__in=Strength.values), name="judgment_strength_valid"
            ),
            models.CheckConstraint(
                condition=~Q(choice="tie") | Q(strength__isnull=True), name="judgment_tie_has_no_strength"
            ),
            models.CheckConstraint(
                condition=Q(shown_left__isnull=True) | Q(shown_left__in=Side.values),
                name="judgment_shown_left_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "annotator", "-created_at"], name="judgment_by_annotator"),
            models.Index(fields=["project", "id"], name="judgment_by_project"),
        ]

    def __str__(self):
        return f"{self.annotator} on #{self.comparison_id}: {self.choice} {self.strength or ''}".strip()


class Settlement(models.Model):
    """A reviewer's decision on a comparison; the latest is the comparison's `settled_choice`,
    earlier ones stay as its history."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="settlements")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="settlements")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(decision__in=Decision.values), name="settlement_decision_valid"),
        ]

    def __str__(self):
        return f"#{self.comparison_id} settled {self.decision} by {self.reviewer}"


class Skip(models.Model):
    """An annotator passed on a comparison; the queue does not offer it to them again."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skips")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["comparison", "annotator"], name="one_skip_per_annotator")]

    def __str__(self):
        return f"{self.annotator} skipped #{self.comparison_id}"


class ImportBatch(models.Model):
    """One import of a file, with what it added: the audit trail of where data came from."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=300)
    sha256 = models.CharField(max_length=64)
    format = models.CharField(max_length=20)
    rows = models.PositiveIntegerField(default=0)
    prompts_added = models.PositiveIntegerField(default=0)
    candidates_added = models.PositiveIntegerField(default=0)
    comparisons_added = models.PositiveIntegerField(default=0)
    judgments_added = models.PositiveIntegerField(default=0)
    rows_skipped = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "import batches"

    def __str__(self):
        return f"{self.filename} → {self.project} ({self.rows} rows)"


class ApiToken(models.Model):
    """A personal API token. Only its sha256 digest is stored; `prefix` finds it and is shown in lists."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} (pfl_{self.prefix}_…) of {self.user}"


class Webhook(models.Model):
    """POSTs signed events to `url`: `judgments` once `every_n_judgments` arrived since the last
    call, `job.finished` when a training job ends."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=64)
    events = models.JSONField(default=list)
    every_n_judgments = models.PositiveIntegerField(default=100)
    active = models.BooleanField(default=True)
    last_judgment_id = models.BigIntegerField(default=0)
    # PostgreSQL: the transaction horizon of the last call (annotate/watermarks.py); ids can commit out of order.
    last_judgment_txid = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(every_n_judgments__gte=1), name="webhook_every_n_at_least_1"),
        ]

    def __str__(self):
        return f"{self.url} ({', '.join(self.events or [])})"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the worker should next try it; the sweeper re-sends pending ones long past it (a lost message).
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} → {self.webhook.url}: {self.status}"
