"""OIDC bearer tokens and per-principal rate limits, against the real API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from keel import open_engine
from keel.api import create_app
from keel.errors import ConfigError
from keel.security.audit import AuditLog
from keel.security.oidc import ALGORITHMS_BY_KEY_TYPE, allowed_algorithms
from tests.conftest import LOW_RISK, Clock

ISSUER = "https://login.example.com/"
AUDIENCE = "keel-api"


def make_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


SIGNER, SIGNER_JWK = make_key("k1")
IMPOSTOR, _ = make_key("k1")  # same key id, different key


def token(key: Any = SIGNER, *, alg: str = "RS256", kid: str | None = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dana",
        "iat": now,
        "exp": now + 300,
        "keel_roles": ["decider@credit_limit", "viewer"],
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        key,
        algorithm=alg,
        headers={"kid": kid} if kid else None,
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256() -> str:
    """HS256 keyed with the signer's public key, which anyone holding the JWKS can make."""
    public = SIGNER.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 300}
    signing_input = f"{header}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def configure(project: Path, extra: str) -> None:
    with (project / "keel.yaml").open("a") as f:
        f.write(extra)


@contextmanager
def file_client(project: Path, jwks: dict[str, Any]) -> Iterator[TestClient]:
    (project / "jwks.json").write_text(json.dumps(jwks))
    configure(
        project, f"oidc:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
    )
    with open_engine(project, environ={}) as engine:
        audit = AuditLog(engine.db)
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            yield client
        audit.close()


@pytest.fixture
def oidc_client(project: Path) -> Iterator[TestClient]:
    with file_client(project, {"keys": [SIGNER_JWK]}) as client:
        yield client


def decide(client: TestClient, bearer: str) -> Any:
    return client.post(
        "/v1/flows/credit_limit/decisions",
        json={"inputs": LOW_RISK},
        headers={"Authorization": f"Bearer {bearer}"},
    )


def test_valid_token_with_roles_from_the_claim(oidc_client: TestClient) -> None:
    response = decide(oidc_client, token())
    assert response.status_code == 200, response.text
    flows = oidc_client.get("/v1/flows", headers={"Authorization": f"Bearer {token()}"})
    assert [f["name"] for f in flows.json()] == ["credit_limit"]


@pytest.mark.parametrize(
    ("bearer", "message"),
    [
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(aud="someone-else"), "audience"),
        (lambda: token(iss="https://evil.example.com/"), "issuer"),
        (lambda: token(IMPOSTOR), "rejected"),
        (lambda: token(sub=None), "rejected"),
        (lambda: token(kid=None), "the token names no key (kid)"),
        (lambda: token(kid="k2"), "unknown key 'k2'"),
        (lambda: token(alg="PS256"), "algorithm 'PS256', which key 'k1' does not allow"),
        (forged_hs256, "algorithm 'HS256'"),
        (lambda: token(None, alg="none"), "algorithm 'none'"),
        (lambda: token(None, alg="none", kid=None), "the token names no key (kid)"),
        (lambda: "not.a.jwt", "not a valid bearer token"),
    ],
)
def test_bad_tokens_are_refused(oidc_client: TestClient, bearer: Any, message: str) -> None:
    response = decide(oidc_client, bearer())
    assert response.status_code == 401, response.text
    assert message in response.json()["message"]


def test_token_without_the_role_is_forbidden(oidc_client: TestClient) -> None:
    assert decide(oidc_client, token(keel_roles=["viewer"])).status_code == 403
    assert decide(oidc_client, token(keel_roles=["decider@pricing", "wizard"])).status_code == 403


def test_jwks_fetched_from_a_url(project: Path) -> None:
    body = json.dumps({"keys": [SIGNER_JWK]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks"
        configure(
            project, f"oidc:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_url: {url}\n"
        )
        with open_engine(project, environ={}) as engine, TestClient(create_app(engine)) as client:
            assert decide(client, token()).status_code == 200
            # the same rules as with a file: the token names its key, the key's alg holds
            for bearer, message in [
                (token(kid=None), "the token names no key (kid)"),
                (token(alg="PS256"), "algorithm 'PS256'"),
                (forged_hs256(), "algorithm 'HS256'"),
            ]:
                response = decide(client, bearer)
                assert response.status_code == 401, response.text
                assert message in response.json()["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_key_without_alg_accepts_the_algorithms_of_its_type(project: Path) -> None:
    bare = {k: v for k, v in SIGNER_JWK.items() if k != "alg"}
    with file_client(project, {"keys": [bare]}) as client:
        for alg in ("RS256", "PS256", "RS512"):
            assert decide(client, token(alg=alg)).status_code == 200, alg
        for bearer in (forged_hs256(), token(None, alg="none")):
            response = decide(client, bearer)
            assert response.status_code == 401
            assert (
                "does not allow (allowed: RS256, RS384, RS512, PS256"
                in (response.json()["message"])
            )


def test_allowed_algorithms_follow_the_key() -> None:
    rsa_jwk = {k: v for k, v in SIGNER_JWK.items() if k != "alg"}
    ec_jwk = json.loads(
        jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())
    )
    assert allowed_algorithms(jwt.PyJWK(SIGNER_JWK)) == ("RS256",)
    assert allowed_algorithms(jwt.PyJWK({**rsa_jwk, "alg": "PS384"})) == ("PS384",)
    assert allowed_algorithms(jwt.PyJWK(rsa_jwk)) == ALGORITHMS_BY_KEY_TYPE["RSA"]
    assert allowed_algorithms(jwt.PyJWK(ec_jwk)) == ("ES256", "ES384", "ES512")
    assert allowed_algorithms(jwt.PyJWK({**ec_jwk, "alg": "ES384"})) == ("ES384",)
    # a shared secret verifies nothing, declared or not
    assert allowed_algorithms(jwt.PyJWK({"kty": "oct", "k": b64(b"secret")})) == ()
    assert allowed_algorithms(jwt.PyJWK({"kty": "oct", "k": b64(b"s"), "alg": "HS256"})) == ()


def test_a_shared_secret_in_the_key_set_verifies_nothing(project: Path) -> None:
    secret = b"a-secret-of-at-least-thirty-two-bytes"
    shared = {"kty": "oct", "k": b64(secret), "kid": "k2", "alg": "HS256"}
    with file_client(project, {"keys": [SIGNER_JWK, shared]}) as client:
        response = decide(client, token(secret, alg="HS256", kid="k2"))
        assert response.status_code == 401
        assert "cannot verify tokens" in response.json()["message"]
        assert decide(client, token()).status_code == 200


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("oidc:\n  issuer: x\n", "needs 'issuer' and 'audience'"),
        ("oidc:\n  issuer: x\n  audience: y\n", "exactly one of 'jwks_url' and 'jwks_file'"),
        (
            "oidc:\n  issuer: x\n  audience: y\n  jwks_url: http://idp.example.com/k\n",
            "must use https",
        ),
        (
            "oidc:\n  issuer: x\n  audience: y\n  jwks_file: a\n  colour: red\n",
            "unknown setting oidc.colour",
        ),
        ("api:\n  rate_per_s: 0\n", "api.rate_per_s must be a positive integer"),
    ],
)
def test_bad_identity_settings(project: Path, section: str, message: str) -> None:
    configure(project, section)
    with pytest.raises(ConfigError, match=message):
        open_engine(project, environ={})


def test_a_key_set_declaring_alg_none_is_refused_at_start(project: Path) -> None:
    bad = {"keys": [{**SIGNER_JWK, "alg": "none"}]}
    with (
        pytest.raises(ConfigError, match="a key declares alg 'none'"),
        file_client(project, bad),
    ):
        pass


def test_rate_limit_per_principal(project: Path) -> None:
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    configure(project, "api:\n  rate_per_s: 1\n  burst: 2\n")
    clock = Clock(time.time())  # the bucket refills by the injected clock, not the machine's
    with open_engine(project, environ={}, clock=clock) as engine:
        now = clock()
        first = create_key(engine.db, "a", "a", [Grant(Role.VIEWER)], "t", now)[1]
        second = create_key(engine.db, "b", "b", [Grant(Role.VIEWER)], "t", now)[1]
        with TestClient(create_app(engine)) as client:
            codes = [
                client.get("/v1/flows", headers={"Authorization": f"Bearer {first}"})
                for _ in range(3)
            ]
            assert [r.status_code for r in codes] == [200, 200, 429]
            assert codes[2].json()["code"] == "rate_limited"
            assert int(codes[2].headers["retry-after"]) >= 1
            other = client.get("/v1/flows", headers={"Authorization": f"Bearer {second}"})
            assert other.status_code == 200  # buckets are per principal
