"""Job kinds, one module each: its config, the check made before it is queued, and how a worker
runs it (a few lines of ORM work around a Django-free runner in `training.runners`). Each module
registers its kind in `training.registry` when imported; the app imports them all at start.

To add a kind: write `training/kinds/NAME.py` ending in `register(KindSpec(...))`, add NAME to
`MODULES` below and to `Job.Kind`. Nothing in the job core changes."""

from importlib import import_module

MODULES = ("reward_model", "score", "dpo", "grpo", "generate", "best_of_n", "expert_iteration", "round")


def register_all() -> None:
    for name in MODULES:
        import_module(f"{__name__}.{name}")
