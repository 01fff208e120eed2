"""OIDC bearer tokens: JWTs verified against the issuer's keys (JWKS), audience and expiry.

Roles come from a claim (``keel_roles`` by default): a list of ``role`` (every flow) or
``role@flow`` entries. Entries naming no known role grant nothing. The JWKS is read from a
file, or fetched from a URL and cached by PyJWT's client, which refetches on an unknown
key id, so a rotated key is picked up without a restart.
"""

from __future__ import annotations

import json
from typing import Any

import jwt

from keel.config import OidcSettings
from keel.errors import ConfigError
from keel.security.roles import AuthenticationError, Grant, Principal, Role

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


def grants_from_claim(value: Any) -> tuple[Grant, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if not isinstance(item, str):
            continue
        role, _, flow = item.partition("@")
        if role in Role.__members__.values():
            out.append(Grant(Role(role), flow or None))
    return tuple(out)


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks_url:
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300)
        elif settings.jwks_file:
            try:
                self._keys = jwt.PyJWKSet.from_dict(json.loads(settings.jwks_file.read_text()))
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                raise ConfigError(
                    f"cannot read the OIDC key set {settings.jwks_file}: {exc}",
                    {"key": "oidc.jwks_file"},
                ) from exc

    def _key(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"not a valid bearer token: {exc}") from exc
        kid = header.get("kid")
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid).key if kid else None
            except jwt.PyJWKClientConnectionError as exc:
                raise AuthenticationError(f"the issuer's keys cannot be fetched: {exc}") from exc
            except jwt.PyJWKClientError as exc:
                raise AuthenticationError(f"token signed with an unknown key: {exc}") from exc
        if self._keys is not None:
            for key in self._keys.keys:
                if kid is None or key.key_id == kid:
                    return key.key
        raise AuthenticationError("token signed with an unknown key")

    def authenticate(self, token: str) -> Principal:
        key = self._key(token)
        if key is None:
            raise AuthenticationError("token has no key id (kid)")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError(
                f"token is not for audience '{self.settings.audience}'"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError(f"token is not from issuer '{self.settings.issuer}'") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token rejected: {exc}") from exc
        subject = str(claims["sub"])
        grants = grants_from_claim(claims.get(self.settings.roles_claim))
        name = str(claims.get("name") or claims.get("email") or subject)
        return Principal(f"oidc:{claims['iss']}#{subject}", name, grants, float(claims["exp"]))
