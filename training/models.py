"""Jobs, dataset snapshots, checkpoints (the model registry, with lineage) and reward scores.

The Job row is the source of truth for a job's fate, not the broker: a worker claims it with a
conditional update, beats a heartbeat while it runs, and a sweeper fails jobs whose heartbeat went
stale and re-sends queued jobs whose message a broker may have lost.
"""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from annotate.models import Candidate, Comparison, Project


class JobKind(models.TextChoices):
    REWARD_MODEL = "reward_model", "Reward model"
    SCORE = "score", "Score responses"
    DPO = "dpo", "DPO"
    GRPO = "grpo", "GRPO"
    GENERATE = "generate", "Generate"
    BEST_OF_N = "best_of_n", "Best-of-n"
    EXPERT_ITERATION = "expert_iteration", "Expert iteration"
    ROUND = "round", "Next round (pipeline)"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    Kind = JobKind
    Status = JobStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=20, choices=JobKind.choices)
    config = models.JSONField(default=dict, help_text="The validated config: what the run needs to repeat.")
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    queue = models.CharField(max_length=20, default="cpu")
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Final metrics.")
    worker = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    cancel_requested = models.BooleanField(default=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="steps",
                               help_text="The pipeline this job is a step of.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="job_status_valid"),
            models.CheckConstraint(condition=Q(kind__in=JobKind.values), name="job_kind_valid"),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="job_progress_0_to_1"),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="job_by_status")]

    def __str__(self):
        return f"#{self.pk} {self.kind} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or self.heartbeat_at
        return (end - self.started_at).total_seconds() if end else None


class JobMetric(models.Model):
    """One point of a job's metric series (loss, accuracy, reward over steps)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=60)
    value = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["job", "name", "step"], name="metric_series")]

    def __str__(self):
        return f"{self.name}@{self.step}={self.value:.4g}"


class DatasetSnapshot(models.Model):
    """A frozen export file, named by the sha256 of its content, and what it was cut from."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    sha256 = models.CharField(max_length=64)
    path = models.CharField(max_length=500, help_text="Relative to the media directory.")
    format = models.CharField(max_length=30)
    options = models.JSONField(default=dict)
    rows = models.PositiveIntegerField()
    judgment_watermark = models.BigIntegerField(help_text="The highest judgment id it includes.")
    judgments = models.PositiveIntegerField(default=0)
    comparisons = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="snapshot_unique_content")]

    def __str__(self):
        return f"{self.format} {self.sha256[:12]} ({self.rows} rows, up to judgment {self.judgment_watermark})"


class CheckpointKind(models.TextChoices):
    REWARD_MODEL = "reward_model", "Reward model"
    POLICY = "policy", "Policy"


class Checkpoint(models.Model):
    """A registered model: complete on disk before this row exists. Lineage: the snapshots it
    learned from, the checkpoint it started from, the reward model that guided it, the job."""

    Kind = CheckpointKind

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="checkpoints")
    kind = models.CharField(max_length=20, choices=CheckpointKind.choices)
    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=300)
    path = models.CharField(max_length=500, blank=True,
                            help_text="Relative to the media directory; empty for an untrained base model.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    reward_model = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    snapshots = models.ManyToManyField(DatasetSnapshot, blank=True, related_name="checkpoints")
    job = models.OneToOneField(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="checkpoint")
    metrics = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=Q(kind__in=CheckpointKind.values), name="checkpoint_kind")]

    def __str__(self):
        return f"{self.name} (#{self.pk})"

    @property
    def directory(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.path

    @property
    def model_name(self) -> str:
        """What a runner loads: the checkpoint's directory, or the base model's name."""
        return str(self.directory) if self.path else self.base_model

    def lineage(self) -> list["Checkpoint"]:
        """This checkpoint and its ancestors, newest first."""
        chain, seen, node = [], set(), self
        while node is not None and node.pk not in seen:
            chain.append(node)
            seen.add(node.pk)
            node = node.parent
        return chain


class CandidateScore(models.Model):
    """A reward model's score for one response: the ensemble mean and its spread."""

    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="scores")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="scores")
    score = models.FloatField()
    spread = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["candidate", "checkpoint"], name="one_score_per_checkpoint")]

    def __str__(self):
        return f"{self.candidate_id} by {self.checkpoint_id}: {self.score:.3f} ± {self.spread:.3f}"


class GeneratedCandidate(models.Model):
    """Which policy wrote a response, in which round, and as what: the new policy or its parent."""

    class Role(models.TextChoices):
        NEW = "new", "New policy"
        PARENT = "parent", "Parent policy"

    candidate = models.OneToOneField(Candidate, on_delete=models.CASCADE, related_name="generated")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="answers")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    round = models.PositiveIntegerField()
    role = models.CharField(max_length=8, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["round", "role"], name="generated_by_round")]

    def __str__(self):
        return f"{self.role} answer by {self.checkpoint_id} in round {self.round}"


class RoundPair(models.Model):
    """A round comparison's sides: which response is the new policy's, which policies wrote them.
    Kept per comparison, not per response: the same text can be one round's new answer and the
    next round's parent answer (greedy decoding, or a policy that barely moved)."""

    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, related_name="round_pair")
    new_candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    policy = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="+")
    parent = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    round = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["round"], name="round_pair_round")]
        constraints = [models.CheckConstraint(condition=~Q(policy=F("parent")), name="round_pair_two_policies")]

    def __str__(self):
        return f"round {self.round}: comparison {self.comparison_id}, new side {self.new_candidate_id}"


class CandidateEmbedding(models.Model):
    """A response's frozen encoder embedding, computed once and kept: the reward head's input.
    `encoder` names the encoder and what it read, so a change of either recomputes it."""

    candidate = models.OneToOneField(Candidate, on_delete=models.CASCADE, primary_key=True, related_name="embedding")
    encoder = models.CharField(max_length=100)
    dim = models.PositiveSmallIntegerField()
    vector = models.BinaryField(help_text="float32, little-endian")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.encoder} embedding of candidate {self.candidate_id}"


class HeadStatus(models.TextChoices):
    WAITING = "waiting", "Waiting for judgments"
    FITTED = "fitted", "Ordering the queue"
    OFF = "off", "Off"
    FAILED = "failed", "Failed"


class RewardHead(models.Model):
    """A project's always-fresh reward head (a Bradley–Terry ensemble on frozen embeddings): its
    settings, its last fit, and what it did to the queue. One per project, made on first need."""

    Status = HeadStatus

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="reward_head")
    enabled = models.BooleanField(default=True, help_text="Set the priorities of open comparisons.")
    refit_every = models.PositiveIntegerField(default=20, help_text="Refit after this many new judgments (K).")
    min_judgments = models.PositiveIntegerField(
        default=30, help_text="Below this the queue keeps its current order.")
    members = models.PositiveSmallIntegerField(default=8, help_text="Heads in the bootstrap ensemble.")
    status = models.CharField(max_length=12, choices=HeadStatus.choices, default=HeadStatus.WAITING)
    message = models.CharField(max_length=300, blank=True)
    judgments_seen = models.PositiveIntegerField(default=0, help_text="Judgments in the project at the last fit.")
    fits = models.PositiveIntegerField(default=0)
    fitted_at = models.DateTimeField(null=True, blank=True)
    fit_seconds = models.FloatField(null=True, blank=True)
    encoder = models.CharField(max_length=100, blank=True)
    weights = models.BinaryField(null=True, blank=True, help_text="float32 [members, features]")
    metrics = models.JSONField(default=dict, blank=True)
    pending_embeddings = models.PositiveIntegerField(default=0)
    refit_queued_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=HeadStatus.values), name="reward_head_status_valid"),
            models.CheckConstraint(condition=Q(refit_every__gte=1), name="reward_head_refit_every_at_least_1"),
            models.CheckConstraint(condition=Q(members__gte=1, members__lte=32), name="reward_head_members_1_to_32"),
        ]

    def __str__(self):
        return f"reward head of {self.project} ({self.status})"


class JudgmentNoise(models.Model):
    """The reward head's disagreement with one judgment: the probability it gives the side the
    annotator did not choose, from ensemble members that never saw that judgment where there
    are any. High values are candidates for a second look (label noise, carelessness)."""

    judgment = models.OneToOneField("annotate.Judgment", on_delete=models.CASCADE, primary_key=True,
                                    related_name="noise")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    disagreement = models.FloatField()
    out_of_bag = models.BooleanField(default=True)
    fit = models.PositiveIntegerField(help_text="The head's fit number that computed it.")

    class Meta:
        indexes = [models.Index(fields=["project", "-disagreement"], name="noise_by_disagreement")]

    def __str__(self):
        return f"judgment {self.judgment_id}: {self.disagreement:.2f}"
