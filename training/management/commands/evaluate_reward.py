"""`evaluate_reward CHECKPOINT FILE`: a reward model's accuracy on a labelled file against its baselines."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotate.importing import ImportFailed, iter_parsed
from training.models import Checkpoint
from training.runners.base import set_threads


class Command(BaseCommand):
    help = ("Score a labelled file (any format import_data reads) with a reward-model checkpoint and print JSON: "
            "pairwise accuracy, n, by strength, calibration, and the random and longer-wins baselines.")

    def add_arguments(self, parser):
        parser.add_argument("checkpoint", type=int)
        parser.add_argument("path")
        parser.add_argument("--format", default="auto")
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, checkpoint, path, format, batch_size, **options):
        from rewards.evaluation import pairwise_report
        from rewards.scoring import RewardModel

        target = Checkpoint.objects.filter(pk=checkpoint, kind=Checkpoint.Kind.REWARD_MODEL).first()
        if target is None:
            raise CommandError(f"No reward-model checkpoint #{checkpoint}.")
        prompts, chosen, rejected = [], [], []
        try:
            with open(path, "rb") as raw:
                for row in iter_parsed(raw, format):
                    for i, j, label in row.pairs:
                        if label not in ("a", "b"):
                            continue
                        win, lose = (i, j) if label == "a" else (j, i)
                        prompts.append(row.prompt_messages or row.prompt_text)
                        chosen.append(row.responses[win][0])
                        rejected.append(row.responses[lose][0])
        except FileNotFoundError:
            raise CommandError(f"No file at {path}.") from None
        except ImportFailed as exc:
            raise CommandError(str(exc)) from None
        if not prompts:
            raise CommandError("The file holds no labelled pairs (preference a or b) to evaluate on.")
        set_threads(0)
        model = RewardModel(target.directory)
        good = model.score(prompts, chosen, batch_size)
        bad = model.score(prompts, rejected, batch_size)
        report = pairwise_report((good.mean - bad.mean).tolist(), [None] * len(prompts),
                                 [len(c) for c in chosen], [len(r) for r in rejected])
        self.stdout.write(json.dumps({"checkpoint": target.pk, **report}))
