"""`run_job KIND --project SLUG`: launch a job from the command line, optionally wait (with progress) and
print its metrics."""

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from annotate.models import Project
from annotate.progress import CommandProgress
from training import jobs
from training.models import Job


class Command(BaseCommand):
    help = ("Launch a job (validated as the page and the API do). With --wait, follow it to the end and "
            "print its final metrics as JSON on the last line (progress on stderr: a bar on a terminal, plain lines "
            "otherwise); --here runs it in this process instead of a worker.")

    def add_arguments(self, parser):
        parser.add_argument("kind", help="reward_model, score, dpo, grpo, generate or round")
        parser.add_argument("--project", required=True)
        parser.add_argument("--config", default="{}", help="JSON object of config fields")
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--here", action="store_true", help="run in this process (no worker needed)")
        parser.add_argument("--timeout", type=float, default=24 * 3600)

    def handle(self, *args, kind, project, config, wait, here, timeout, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        try:
            values = json.loads(config)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise CommandError("--config must be a JSON object of config fields.")
        try:
            job = jobs.launch(target, kind, values)
        except jobs.LaunchRefused as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"job {job.pk} queued ({job.kind} on queue {job.queue})")
        if here:
            jobs.run(job.pk)
        elif not wait:
            self.stdout.write(json.dumps({"job": job.pk, "status": job.status}))
            return
        deadline = time.monotonic() + timeout
        # A bar on a terminal; plain lines (one per change of status or message) otherwise.
        with CommandProgress(100, f"job {job.pk} {job.kind}", stream=self.stderr, unit="%", every=0) as progress:
            while True:
                job.refresh_from_db()
                note = job.status if job.message in ("", job.status) else f"{job.status}: {job.message}"
                progress.update(round(100 * job.progress), note)
                if job.finished or time.monotonic() > deadline:
                    break
                time.sleep(1)
        self.stdout.write(json.dumps({"job": job.pk, "status": job.status, "error": job.error, **job.result}))
        if job.status != Job.Status.SUCCEEDED:
            sys.exit(1)
