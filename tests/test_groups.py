"""Where a principal's groups and collection-scoped knowledge grants come from: API keys
(the key service and ``keel keys``) and OIDC tokens (the groups claim, and ``role@collection``
in the roles claim). On SQLite and, under `make test`, PostgreSQL."""

# ruff: noqa: F811 - the fixtures `clock`, `audit` and `keys` come from tests/keys_support.py
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.config import load_settings
from keel.errors import InputError, KeelError
from keel.security.apikeys import Keys, authenticate
from keel.security.audit import AuditLog
from keel.security.oidc import OidcVerifier, groups_from_claim
from keel.security.roles import Grant, Permission, PermissionDeniedError, Role, group_name
from keel.store.database import Database, open_database
from keel.telemetry import Metrics
from tests.conftest import Clock, person
from tests.keys_support import ADMIN, audit, clock, events, keys  # noqa: F401 - fixtures
from tests.test_identity import AUDIENCE, ISSUER, SIGNER_JWK, decide, file_client, token

READER = Grant(Role.READER, collection="handbook")
GOOD_NAMES = ["payroll", "emea.hr", "team@corp", "9-x_y", "A" * 128]
BAD_NAMES = ["", "-lead", ".hidden", "hr team", "a/b", "é", "x" * 129, "line\nbreak"]


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_group_names_that_are_accepted(name: str) -> None:
    assert group_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_group_names_that_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="is not a group name: use 1 to 128 letters"):
        group_name(name)


def test_groups_round_trip_through_create_list_and_authenticate(
    db: Database, audit: AuditLog, keys: Keys, clock: Clock
) -> None:
    key, text = keys.create(ADMIN, "hr-bot", [READER], groups=["payroll", "emea", "payroll"])
    assert key.groups == ("payroll", "emea")  # a repeat is carried once
    [listed] = keys.list(ADMIN)
    assert listed.groups == ("payroll", "emea") and listed.grants == (READER,)
    assert listed.to_dict(clock())["groups"] == ["payroll", "emea"]
    principal = authenticate(db, text, clock())
    assert principal.groups == ("payroll", "emea")
    assert principal.grants == (READER,)
    assert principal.access_keys("handbook") == {
        "person:hr-bot",
        "group:payroll",
        "group:emea",
        "role:reader",
    }
    assert principal.access_keys("contracts") == {"person:hr-bot", "group:payroll", "group:emea"}
    assert principal.can(Permission.SEARCH_KNOWLEDGE, collection="handbook")
    assert not principal.can(Permission.SEARCH_KNOWLEDGE, collection="contracts")
    [created] = events(db, audit)
    assert created["action"] == "key_created" and created["outcome"] == "ok"
    assert created["detail"] == {
        "name": "hr-bot",
        "grants": ["reader@handbook"],
        "groups": ["payroll", "emea"],
    }
    plain, plain_text = keys.create(ADMIN, "svc", [Grant(Role.VIEWER)])
    assert plain.groups == () and authenticate(db, plain_text, clock()).groups == ()


@pytest.mark.parametrize("name", ["-lead", "hr team", "x" * 129])
def test_a_bad_group_name_creates_no_key(keys: Keys, name: str) -> None:
    with pytest.raises(InputError, match="is not a group name"):
        keys.create(ADMIN, "hr-bot", [READER], groups=["payroll", name])
    assert keys.list(ADMIN) == []


def test_group_changes_and_their_refusals_are_recorded(
    db: Database, audit: AuditLog, keys: Keys, clock: Clock
) -> None:
    key, text = keys.create(ADMIN, "hr-bot", [READER])
    assert keys.add_groups(ADMIN, key.prefix, ["payroll", "emea"]).groups == ("payroll", "emea")
    assert authenticate(db, text, clock()).groups == ("payroll", "emea")
    refusals = [
        (lambda: keys.add_groups(ADMIN, key.prefix, ["payroll"]), "already carries group payroll"),
        (lambda: keys.remove_groups(ADMIN, key.prefix, ["apac"]), "does not carry group apac"),
        (lambda: keys.add_groups(ADMIN, key.prefix, ["hr team"]), "is not a group name"),
        (lambda: keys.add_groups(ADMIN, key.prefix, []), "at least one group"),
        (lambda: keys.add_groups(ADMIN, "ffffffff", ["apac"]), "no API key with prefix"),
    ]
    for refused, message in refusals:
        with pytest.raises(KeelError, match=message):
            refused()
    assert keys.list(ADMIN)[0].groups == ("payroll", "emea")  # nothing changed
    clock.advance(1)
    keys.remove_groups(ADMIN, key.prefix, ["emea", "payroll"])
    assert authenticate(db, text, clock()).groups == ()  # a key may carry no group
    keys.add_groups(ADMIN, key.prefix, ["apac"])
    keys.revoke(ADMIN, key.prefix)
    with pytest.raises(KeelError, match="its groups can no longer change"):
        keys.remove_groups(ADMIN, key.prefix, ["apac"])
    recorded = events(db, audit)
    assert [(e["action"], e["outcome"]) for e in recorded] == [
        ("key_created", "ok"),
        ("groups_added", "ok"),
        ("groups_added", "refused"),
        ("groups_removed", "refused"),
        ("groups_added", "refused"),
        ("groups_added", "refused"),
        ("groups_added", "refused"),
        ("groups_removed", "ok"),
        ("groups_added", "ok"),
        ("key_revoked", "ok"),
        ("groups_removed", "refused"),
    ]
    assert {e["principal"] for e in recorded} == {ADMIN.id}
    assert recorded[1]["detail"] == {"groups": ["payroll", "emea"], "now": ["payroll", "emea"]}
    assert recorded[4]["detail"]["reason"].startswith("'hr team' is not a group name")
    assert recorded[7]["detail"] == {"groups": ["emea", "payroll"], "now": []}


def test_only_a_global_admin_changes_groups(db: Database, audit: AuditLog, keys: Keys) -> None:
    key, _ = keys.create(ADMIN, "hr-bot", [READER], groups=["payroll"])
    owner = person("oidc:idp#kim", "Kim", "knowledge_owner")
    for attempt in (
        lambda: keys.create(owner, "mine", [READER], groups=["payroll"]),
        lambda: keys.add_groups(owner, key.prefix, ["emea"]),
        lambda: keys.remove_groups(owner, key.prefix, ["payroll"]),
    ):
        with pytest.raises(PermissionDeniedError, match="may not manage keys"):
            attempt()
    assert keys.list(ADMIN)[0].groups == ("payroll",)
    denied = [(e["action"], e["outcome"]) for e in events(db, audit)[1:]]
    assert denied == [
        ("key_created", "denied"),
        ("groups_added", "denied"),
        ("groups_removed", "denied"),
    ]


def test_a_collection_grant_changes_like_a_flow_grant(db: Database, keys: Keys) -> None:
    key, _ = keys.create(ADMIN, "hr-bot", [READER])
    curator = Grant(Role.CURATOR, collection="handbook")
    changed = keys.grant(ADMIN, key.prefix, [curator, Grant(Role.READER)])
    assert [str(g) for g in changed.grants] == ["reader@handbook", "curator@handbook", "reader@*"]
    with pytest.raises(KeelError, match="already has reader@handbook"):
        keys.grant(ADMIN, key.prefix, [READER])
    after = keys.ungrant(ADMIN, key.prefix, [READER, Grant(Role.READER)])
    assert after.grants == (curator,)


# ---- the command line ----------------------------------------------------------------


def keel(project: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "-p", str(project)], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_keys_carry_groups_and_collection_grants_on_the_command_line(
    project: Path, env: dict[str, str]
) -> None:
    code, out, err = keel(
        project,
        env,
        *("keys", "create", "--name", "hr-bot", "--role", "reader", "--collection", "handbook"),
        *("--group", "payroll", "--group", "emea"),
    )
    assert code == 0, err
    text = out.strip()
    prefix = text.split("_")[1]
    assert "(reader@handbook; groups payroll, emea)" in err
    code, out, err = keel(project, env, "keys", "list")
    assert code == 0, err
    assert f"{prefix}  active" in out and "reader@handbook  groups payroll, emea  expires" in out
    code, out, err = keel(project, env, "keys", "add-group", prefix, "--group", "apac")
    assert (code, out.strip()) == (0, f"{prefix} (hr-bot) now carries groups payroll, emea, apac")
    code, out, err = keel(
        project, env, "keys", "remove-group", prefix, "--group", "payroll", "--group", "emea"
    )
    assert (code, out.strip()) == (0, f"{prefix} (hr-bot) now carries groups apac")
    code, out, err = keel(
        project, env, "keys", "grant", prefix, "--role", "curator", "--collection", "handbook"
    )
    assert (code, out.strip()) == (
        0,
        f"{prefix} (hr-bot) now has reader@handbook, curator@handbook",
    )
    code, out, err = keel(
        project, env, "keys", "ungrant", prefix, "--role", "reader", "--collection", "handbook"
    )
    assert (code, out.strip()) == (0, f"{prefix} (hr-bot) now has curator@handbook")
    db = open_database(load_settings(project, env).database_url)
    try:
        principal = authenticate(db, text, time.time())
    finally:
        db.close()
    assert principal.groups == ("apac",)
    assert principal.grants == (Grant(Role.CURATOR, collection="handbook"),)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--role", "reader", "--flow", "credit_limit"),
            "reader is a knowledge role: grant it on a collection, not a flow",
        ),
        (
            ("--role", "decider", "--collection", "handbook"),
            "decider is a flow role: grant it on a flow, not a collection",
        ),
        (
            ("--role", "reader", "--role", "decider", "--flow", "credit_limit"),
            "reader is a knowledge role",
        ),
        (("--role", "reader", "--group", "hr team"), "'hr team' is not a group name"),
        (("--role", "reader", "--group", "-x"), "'-x' is not a group name"),
    ],
)
def test_the_command_line_refuses_a_scope_of_the_wrong_kind_and_bad_groups(
    project: Path, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = keel(project, env, "keys", "create", "--name", "hr-bot", *args)
    assert code == 2 and message in err and out == ""
    code, out, _ = keel(project, env, "keys", "list")
    assert code == 0 and out == ""  # no key was made


def test_the_command_line_refuses_bad_group_changes(project: Path, env: dict[str, str]) -> None:
    code, out, err = keel(project, env, "keys", "create", "--name", "a", "--role", "viewer")
    assert code == 0, err
    prefix = out.strip().split("_")[1]
    for command, group, message in (
        ("add-group", "a/b", "'a/b' is not a group name"),
        ("remove-group", "payroll", f"key {prefix} does not carry group payroll; it carries none"),
    ):
        code, _, err = keel(project, env, "keys", command, prefix, "--group", group)
        assert code == 2 and message in err, err
    code, _, err = keel(project, env, "keys", "grant", prefix, "--role", "curator", "--flow", "x")
    assert code == 2 and "curator is a knowledge role" in err


# ---- OIDC ----------------------------------------------------------------------------


def verifier(project: Path, extra: str = "", metrics: Metrics | None = None) -> OidcVerifier:
    """The verifier a server builds from the project's ``keel.yaml``."""
    (project / "jwks.json").write_text(json.dumps({"keys": [SIGNER_JWK]}))
    with (project / "keel.yaml").open("a") as f:
        f.write(
            f"oidc:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n{extra}"
        )
    oidc = load_settings(project, {}).oidc
    assert oidc is not None
    return OidcVerifier(oidc, metrics)


@pytest.mark.parametrize(
    ("claim", "groups", "ignored"),
    [
        (["payroll", "emea"], ("payroll", "emea"), 0),
        ("payroll  emea payroll", ("payroll", "emea"), 0),
        (["payroll", 7, None, {"name": "x"}, "hr team", "/org/hr", "emea"], ("payroll", "emea"), 5),
        ({"payroll": True}, (), 1),
        (42, (), 1),
        ([], (), 0),
        ("", (), 0),
        (None, (), 0),
    ],
)
def test_groups_from_the_claim(claim: Any, groups: tuple[str, ...], ignored: int) -> None:
    assert groups_from_claim(claim) == (groups, ignored)


def test_a_token_carries_groups_and_collection_grants(project: Path) -> None:
    metrics = Metrics()
    oidc = verifier(project, metrics=metrics)
    principal = oidc.authenticate(
        token(groups=["payroll", "emea"], keel_roles=["reader@handbook", "viewer"])
    )
    assert principal.groups == ("payroll", "emea")
    assert principal.grants == (Grant(Role.READER, collection="handbook"), Grant(Role.VIEWER))
    assert principal.access_keys("handbook") == {
        "person:" + principal.person,
        "group:payroll",
        "group:emea",
        "role:reader",
        "role:viewer",
    }
    assert oidc.authenticate(token()).groups == ()  # no claim, no groups
    assert metrics.registry.get_sample_value("keel_oidc_groups_ignored_total") == 0


def test_what_the_groups_claim_holds_besides_names_is_counted_and_logged(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    oidc = verifier(project, metrics=metrics)
    with caplog.at_level("WARNING", logger="keel.oidc"):
        principal = oidc.authenticate(token(groups=["payroll", 7, ["x"], "hr team"]))
        assert oidc.authenticate(token(groups={"x": 1})).groups == ()
    assert principal.groups == ("payroll",)
    assert metrics.registry.get_sample_value("keel_oidc_groups_ignored_total") == 4
    first = caplog.records[0].getMessage()
    assert len(caplog.records) == 2 and first.startswith(
        "ignored 3 item(s) of the groups claim 'groups' in the token of "
        f"oidc:{ISSUER}#dana: each must be a group name"
    )


def test_the_groups_claim_is_a_setting(project: Path) -> None:
    oidc = verifier(project, "  groups_claim: roles_and_teams\n")
    assert oidc.settings.groups_claim == "roles_and_teams"
    principal = oidc.authenticate(token(groups=["ignored"], roles_and_teams="payroll emea"))
    assert principal.groups == ("payroll", "emea")


def test_a_knowledge_role_in_the_roles_claim_is_never_a_flow_grant(project: Path) -> None:
    """``reader@credit_limit`` names a collection called credit_limit, never the flow."""
    oidc = verifier(project)
    principal = oidc.authenticate(token(keel_roles=["reader@credit_limit", "curator"]))
    assert principal.grants == (
        Grant(Role.READER, collection="credit_limit"),
        Grant(Role.CURATOR),
    )
    assert not principal.can(Permission.READ_FLOWS, "credit_limit")
    assert principal.can(Permission.SEARCH_KNOWLEDGE, collection="credit_limit")
    assert principal.can(Permission.CURATE_KNOWLEDGE, collection="handbook")


def test_the_server_counts_what_it_ignores_in_the_groups_claim(project: Path) -> None:
    """The HTTP API's verifier counts into the engine's metrics, served at ``/metrics``."""
    with file_client(project, {"keys": [SIGNER_JWK]}) as client:
        admin = {"Authorization": f"Bearer {token(keel_roles=['admin'], groups=['hr', 7])}"}
        assert decide(client, token(groups=["payroll", {"x": 1}, "a b"])).status_code == 200
        metrics = client.get("/metrics", headers=admin)
    assert metrics.status_code == 200
    assert "keel_oidc_groups_ignored_total 3.0" in metrics.text
