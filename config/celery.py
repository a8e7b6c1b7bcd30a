"""The Celery app. Queues: `default` (light work), `cpu` and `gpu` (training jobs). The embedded
default runs one worker on all three; production runs workers per queue (see README)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue("default"), Queue("cpu"), Queue("gpu")]
app.autodiscover_tasks()
