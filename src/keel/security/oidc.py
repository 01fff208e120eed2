"""OIDC bearer tokens: JWTs verified against the issuer's keys (JWKS), audience and expiry.

Roles come from a claim (``keel_roles`` by default): a list of ``role`` (every flow) or
``role@flow`` entries. Entries naming no known role grant nothing. The person behind the
token (separation of duties) is the claim ``person_claim`` names (``email`` by default),
so an API key whose owner is that address is the same person; a token without the claim
is the person ``oidc:<issuer>#<subject>``, and one whose claim is not a non-empty string is
refused. Groups come from the claim ``groups_claim`` names (``groups`` by default): a list
of strings or one space-separated string; an item that is not a group name is ignored,
counted (``keel_oidc_groups_ignored``) and logged, and never fails the token. The JWKS is
read from a file, or fetched from a URL and cached by PyJWT's client, which refetches on an unknown
key id, so a rotated key is picked up without a restart.

Both sources apply one rule to pick the key: the token must name it (``kid``) and a signing
key with that id must be in the set, even when the set holds a single key. The key decides
the algorithm: the one its JWK declares (``alg``), or, when it declares none, any from
:data:`ALGORITHMS_BY_KEY_TYPE` for its key type. ``none`` and HMAC are never accepted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt

from keel.config import OidcSettings
from keel.errors import ConfigError
from keel.security.roles import GROUP_PATTERN, AuthenticationError, Grant, Principal, Role
from keel.telemetry import Metrics

log = logging.getLogger("keel.oidc")

# Asymmetric algorithms only: an HMAC "signature" keyed with the issuer's public key could be
# forged by anyone, and ``none`` is no signature at all.
ALGORITHMS_BY_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


def allowed_algorithms(jwk: jwt.PyJWK) -> tuple[str, ...]:
    """The algorithms a token signed with this key may use: its declared ``alg``, if any."""
    by_type = ALGORITHMS_BY_KEY_TYPE.get(jwk.key_type or "", ())
    # PyJWK fills ``algorithm_name`` with a default when the JWK declares no ``alg``, so the
    # declared value is read from the JWK itself; PyJWT has no public accessor for it.
    declared = jwk._jwk_data.get("alg")
    if declared is None:
        return by_type
    return (declared,) if declared in by_type else ()


def key_id(header: dict[str, Any]) -> str:
    """The ``kid`` a token names; a token that names none is refused, whatever the key set."""
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationError(
            "the token names no key (kid) in its header; ask the issuer to sign with a key "
            "from its published key set and to name it"
        )
    return kid


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
            out.append(Grant.scoped(Role(role), flow or None))
    return tuple(out)


def groups_from_claim(value: Any) -> tuple[tuple[str, ...], int]:
    """The group names in a groups claim, in order and without repeats, and how many items
    were not group names (a claim that is neither a list nor a string counts as one)."""
    if value is None:
        return (), 0
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return (), 1
    names = [v for v in value if isinstance(v, str) and GROUP_PATTERN.fullmatch(v)]
    return tuple(dict.fromkeys(names)), len(value) - len(names)


class OidcVerifier:
    def __init__(self, settings: OidcSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
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
            except NotImplementedError as exc:  # PyJWT's answer to a JWK with "alg": "none"
                raise ConfigError(
                    f"cannot read the OIDC key set {settings.jwks_file}: a key declares alg "
                    "'none'; remove it or declare its real algorithm",
                    {"key": "oidc.jwks_file"},
                ) from exc

    def _key(self, kid: str) -> jwt.PyJWK:
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid)
            except jwt.PyJWKClientConnectionError as exc:
                raise AuthenticationError(f"the issuer's keys cannot be fetched: {exc}") from exc
            except jwt.PyJWKClientError as exc:
                raise AuthenticationError(f"token signed with an unknown key: {exc}") from exc
            except NotImplementedError as exc:  # PyJWT's answer to a JWK with "alg": "none"
                raise AuthenticationError(
                    "the issuer's key set cannot be used: a key declares alg 'none'"
                ) from exc
        if self._keys is not None:
            for key in self._keys.keys:
                # the same keys PyJWKClient considers for the URL: signing keys by id
                if key.key_id == kid and key.public_key_use in ("sig", None):
                    return key
        raise AuthenticationError(f"token signed with an unknown key '{kid}'")

    def authenticate(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"not a valid bearer token: {exc}") from exc
        kid = key_id(header)
        key = self._key(kid)
        allowed = allowed_algorithms(key)
        if not allowed:
            raise AuthenticationError(
                f"the issuer's key '{kid}' ({key.key_type}, alg {key.algorithm_name!r}) cannot "
                "verify tokens: Keel accepts RSA, EC and OKP keys with an asymmetric algorithm "
                "of their type"
            )
        if header.get("alg") not in allowed:
            raise AuthenticationError(
                f"token signed with algorithm {header.get('alg')!r}, which key '{kid}' does not "
                f"allow (allowed: {', '.join(allowed)})"
            )
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(allowed),
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
        ident = f"oidc:{claims['iss']}#{subject}"
        grants = grants_from_claim(claims.get(self.settings.roles_claim))
        name = str(claims.get("name") or claims.get("email") or subject)
        person = person_from_claims(claims, self.settings.person_claim, ident)
        groups = self._groups(claims, ident)
        return Principal(ident, name, person, grants, float(claims["exp"]), groups)

    def _groups(self, claims: dict[str, Any], ident: str) -> tuple[str, ...]:
        """The token's groups; what the claim holds besides group names is counted and
        logged, so a mapping at the issuer that sends the wrong shape is seen, not guessed
        at (the caller simply lacks those groups)."""
        claim = self.settings.groups_claim
        groups, ignored = groups_from_claim(claims.get(claim))
        if ignored:
            if self._metrics is not None:
                self._metrics.oidc_groups_ignored.inc(ignored)
            log.warning(
                "ignored %d item(s) of the groups claim '%s' in the token of %s: each must be "
                "a group name (letters, digits and . _ @ -, at most 128); fix the issuer's "
                "claim mapping, or set oidc.groups_claim to the claim that lists groups",
                ignored,
                claim,
                ident,
            )
        return groups


def person_from_claims(claims: dict[str, Any], claim: str, ident: str) -> str:
    """The person a token names in ``claim``; its own identity when it carries no such
    claim; ``AuthenticationError`` for a claim that names nobody (not a non-empty string)."""
    value = claims.get(claim)
    if value is None:
        return ident
    if not isinstance(value, str) or not value.strip():
        raise AuthenticationError(
            f"the token's person claim '{claim}' must be a non-empty string; ask the issuer "
            "to fill it, or set oidc.person_claim to a claim that names the person"
        )
    return value
