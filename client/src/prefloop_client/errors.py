"""Typed errors: one class per HTTP status the API answers with, each carrying the server's message
(its `detail`, or its field errors flattened to "field: message") and the parsed body."""

from __future__ import annotations


class PrefloopError(Exception):
    """Any error answered by a Prefloop server (or a job that did not succeed)."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, body=None, url: str = ""):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.body = body
        self.url = url


class BadRequest(PrefloopError):
    """400: the request was refused; `errors` holds the field errors (items named by index)."""

    status = 400

    @property
    def errors(self):
        return self.body


class Unauthorized(PrefloopError):
    """401: no token, an unknown one, or a revoked one."""

    status = 401


class Forbidden(PrefloopError):
    """403: you are in the project, but your role may not do this (an annotator managing, say)."""

    status = 403


class NotFound(PrefloopError):
    """404: no such thing, or it belongs to a project you are not in."""

    status = 404


class Conflict(PrefloopError):
    """409: the state forbids it (judging a comparison you do not hold, retrying a running job)."""

    status = 409


class RateLimited(PrefloopError):
    """429: too many requests for this token; `retry_after` is the seconds the server asks to wait."""

    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(PrefloopError):
    """5xx: the server failed; the request may be sent again (bulk creation is idempotent)."""


class JobFailed(PrefloopError):
    """A job waited on ended failed or cancelled; `job` is its final state, `message` its error."""

    def __init__(self, job: dict):
        reason = job.get("error") or job.get("message") or job.get("status")
        super().__init__(f"job {job.get('id')} ({job.get('kind')}) {job.get('status')}: {reason}", body=job)
        self.job = job


BY_STATUS: dict[int, type[PrefloopError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 429: RateLimited,
}


def flatten(body, prefix: str = "") -> list[str]:
    """DRF's error body as "field: message" lines; nested fields and list items joined with dots.

    >>> flatten({"items": {"3": {"prompt": ["The prompt is blank."]}}, "labels": ["Bad."]})
    ['items.3.prompt: The prompt is blank.', 'labels: Bad.']
    >>> flatten({"detail": "Not found."})
    ['Not found.']
    """
    if isinstance(body, dict):
        lines = []
        for key, value in body.items():
            name = "" if key in ("detail", "non_field_errors") and not prefix else f"{prefix}{key}"
            lines += flatten(value, f"{name}." if name else "")
        return lines
    if isinstance(body, list):
        if all(not isinstance(item, dict | list) for item in body):
            text = " ".join(str(item) for item in body)
            return [f"{prefix[:-1]}: {text}" if prefix else text]
        lines = []
        for index, item in enumerate(body):
            lines += flatten(item, f"{prefix}{index}.")
        return lines
    return [f"{prefix[:-1]}: {body}" if prefix else str(body)]


def error_for(status: int, body, url: str, retry_after: float | None = None) -> PrefloopError:
    """The typed error for a response that was not a success."""
    lines = flatten(body) if body not in (None, "", {}) else []
    message = "; ".join(lines) or f"HTTP {status}"
    kind = BY_STATUS.get(status)
    if kind is RateLimited:
        return RateLimited(message, retry_after=retry_after, status=status, body=body, url=url)
    if kind is None:
        kind = ServerError if status >= 500 else PrefloopError
    return kind(message, status=status, body=body, url=url)
