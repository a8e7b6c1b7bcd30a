"""Personal API tokens: made once and shown once, stored as a sha256 digest, revocable, with a
last-used time; and the DRF authentication and per-token throttle that use them.

Both sit on every API call, so neither costs a query on the hot path: a token that checked out is
kept in the cache for TOKEN_CACHE_SECONDS under its digest (revoking deletes it; with the default
per-process cache another server process may accept a revoked token for up to that long, with
PREFLOOP_CACHE_URL=redis:// none does), and the throttle is one counter per token and window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from django.core.cache import cache, caches
from django.db import transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.throttling import SimpleRateThrottle

from .models import ApiToken

TOKEN_PREFIX = "pfl"  # noqa: S105 -- a label, not a secret
LAST_USED_RESOLUTION = timedelta(seconds=60)
TOKEN_CACHE_SECONDS = 10


def _digest(token: str) -> str:
    # Tokens carry 256 random bits, so a plain hash is as strong as a slow one here.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`: the row and the secret, which is never stored and shown once."""
    with transaction.atomic():
        while True:
            lookup = secrets.token_hex(4)
            if not ApiToken.objects.filter(prefix=lookup).exists():
                break
        secret = f"{TOKEN_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}"
        token = ApiToken.objects.create(user=user, name=(name or "token")[:100], prefix=lookup, digest=_digest(secret))
    return token, secret


def _cache_key(digest: str) -> str:
    return f"prefloop:token:{digest}"


def revoke_token(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    cache.delete(_cache_key(token.digest))


def token_for(secret: str) -> ApiToken | None:
    parts = secret.split("_", 2)  # the random part may hold "_" itself
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    digest = _digest(secret)
    token = cache.get(_cache_key(digest))  # keyed by the secret's digest: only that secret finds it
    if token is not None:
        return token
    token = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        return None
    if token.revoked_at is None and token.user.is_active:
        cache.set(_cache_key(digest), token, TOKEN_CACHE_SECONDS)
    return token


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer pfl_…` (or `Token pfl_…`)."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() not in (b"bearer", b"token"):
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        token = token_for(header[1].decode("latin-1"))
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown API token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API token was revoked.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)  # at most once a minute
            token.last_used_at = now
            cache.set(_cache_key(token.digest), token, TOKEN_CACHE_SECONDS)
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class TokenRateThrottle(SimpleRateThrottle):
    """Requests per token (per user for session calls); the rate is PREFLOOP_API_RATE.

    A counter per window that opens at the token's first request (two cache calls, O(1)), not
    DRF's list of every request's time, which the cache pickled whole on each call (thousands of
    floats at the default 6000/min)."""

    scope = "token"
    cache = caches["shared"]  # one count for all web processes (config/settings.py CACHES)
    cache_format = "throttle_n_%(scope)s_%(ident)s"  # a counter, not DRF's list: never the same key

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = time.time()
        if self.cache.add(self.key, 1, self.duration):
            self.cache.set(self.key + ":start", now, self.duration)
            return True
        start = self.cache.get(self.key + ":start")
        if start is None or now - start >= self.duration:
            # The window is over though its counter lives on: the database cache's incr() sets the
            # counter again with the default timeout, so the counter alone cannot tell.
            self.cache.set(self.key, 1, self.duration)
            self.cache.set(self.key + ":start", now, self.duration)
            return True
        try:
            count = self.cache.incr(self.key)
        except ValueError:  # the window closed between the two calls: this request opens the next
            self.cache.set(self.key, 1, self.duration)
            self.cache.set(self.key + ":start", now, self.duration)
            return True
        if count <= self.num_requests:
            return True
        self.window_start = start
        return False

    def wait(self):
        return max(self.window_start + self.duration - time.time(), 0.0)

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "annotate.tokens.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API token: pfl_…"}
