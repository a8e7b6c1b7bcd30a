"""Personal API tokens: made once and shown once, stored as a sha256 digest, revocable, with a
last-used time; and the DRF authentication and per-token throttle that use them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.throttling import SimpleRateThrottle

from .models import ApiToken

TOKEN_PREFIX = "pfl"  # noqa: S105 -- a label, not a secret
LAST_USED_RESOLUTION = timedelta(seconds=60)


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


def revoke_token(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def token_for(secret: str) -> ApiToken | None:
    parts = secret.split("_", 2)  # the random part may hold "_" itself
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(secret)):
        return None
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
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class TokenRateThrottle(SimpleRateThrottle):
    """Requests per token (per user for session calls); the rate is PREFLOOP_API_RATE."""

    scope = "token"
    cache = caches["shared"]  # one count for all web processes (config/settings.py CACHES)

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
