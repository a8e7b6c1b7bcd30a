"""Pipelines of jobs (the "next round"): filled in with DPO/GRPO and generation."""


def advance(pipeline_id: int) -> None:
    """Start the next step of a pipeline when one finishes."""
