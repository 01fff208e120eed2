"""OIDC bearer tokens and per-principal rate limits, against the real API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from keel import open_engine
from keel.api import create_app
from keel.errors import ConfigError
from keel.security.audit import AuditLog
from tests.conftest import LOW_RISK

ISSUER = "https://login.example.com/"
AUDIENCE = "keel-api"


def make_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


SIGNER, SIGNER_JWK = make_key("k1")
IMPOSTOR, _ = make_key("k1")  # same key id, different key


def token(key: Any = SIGNER, **claims: Any) -> str:
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
        algorithm="RS256",
        headers={"kid": "k1"},
    )


def configure(project: Path, extra: str) -> None:
    with (project / "keel.yaml").open("a") as f:
        f.write(extra)


@pytest.fixture
def oidc_client(project: Path) -> Iterator[TestClient]:
    (project / "jwks.json").write_text(json.dumps({"keys": [SIGNER_JWK]}))
    configure(
        project, f"oidc:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
    )
    with open_engine(project, environ={}) as engine:
        audit = AuditLog(engine.db)
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            yield client
        audit.close()


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
        (
            lambda: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**31}, None, algorithm="none"
            ),
            "alg value is not allowed",
        ),
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
    finally:
        server.shutdown()
        server.server_close()


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


def test_rate_limit_per_principal(project: Path) -> None:
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    configure(project, "api:\n  rate_per_s: 1\n  burst: 2\n")
    with open_engine(project, environ={}) as engine:
        now = time.time()
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
