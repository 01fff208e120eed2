"""Four eyes per person: every separation-of-duties rule refuses the same person, whatever
credential each step is taken with, and lets two different persons through.

Each rule is a pair of acts — the first by one principal, the second by another principal
of the same person:

- propose a change / approve it; edit a change / approve it; approve a version / approve it
  again (one person's approvals count once);
- request a decision / claim its review; resolve its review; override it (four eyes on);
- request an autonomy raise / approve it;
- stop a flow over an alarm / resolve that alarm; release the stop.

The same person comes as two API keys with one owner, an API key and an OIDC token with the
owner's email, an admin key next to an owner key, over HTTP; and as the CLI operator under
two OS users, through the services. Each second act must be 409 naming the rule; with two
different persons each must succeed, so the test can fail.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.api.errors import STATUS
from keel.cli import app as cli
from keel.engine import Engine
from keel.errors import KeelError
from keel.monitor.alarms import settle_in
from keel.security.apikeys import Keys, create_key
from keel.security.audit import AuditLog
from keel.security.persons import LOCAL_OPERATOR, person_of
from keel.security.roles import Grant, Principal, Role, local_operator
from tests.conftest import LOW_RISK, person
from tests.test_identity import AUDIENCE, ISSUER, SIGNER_JWK, token
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
FLOW_SETTINGS = """review:
  four_eyes: true
earned_autonomy:
  autonomous: {over: 1d}
"""
Reply = tuple[int, dict[str, Any]]


def policy(engine: Engine, limit: float) -> str:
    """The flow's policy with another starter limit: a distinct version per call."""
    text = (engine.settings.policies_dir / "credit_limit.yaml").read_text()
    return text.replace("  starter_limit: 1000.0\n", f"  starter_limit: {limit}\n")


def raise_alarm(engine: Engine) -> str:
    """A firing drift alarm on the flow, as a monitor run would leave it."""
    spec = engine.runtime(FLOW).flow.monitoring
    run = {"id": "mon_persons", "verdicts": {"drift": "breach"}}
    figures = {"drift": {"drifted": ["input.region"], "limit": 1}}
    notices, _ = engine.writer.transact(
        lambda conn, gate: settle_in(conn, gate, FLOW, spec, run, figures)
    )
    return str(notices[0].alarm.id)


class Caller:
    """One principal taking governance steps: ``act`` returns (HTTP status, JSON body)."""

    def act(self, step: str, *ids: str) -> Reply:
        raise NotImplementedError


@dataclass
class HttpCaller(Caller):
    """Over HTTP with a bearer credential (an API key or an OIDC token)."""

    client: TestClient
    bearer: str
    engine: Engine

    def act(self, step: str, *ids: str) -> Reply:
        reason = {"reason": "checked"}
        verdict = {"resolution": "approve", "reason": "checked"}
        routes: dict[str, Callable[[], tuple[str, str, dict[str, Any] | None]]] = {
            "decide_pending": lambda: (
                "post", f"/v1/flows/{FLOW}/decisions", {"inputs": SHORT_HISTORY}
            ),
            "decide_final": lambda: ("post", f"/v1/flows/{FLOW}/decisions", {"inputs": LOW_RISK}),
            "claim": lambda: ("post", f"/v1/reviews/{ids[0]}/claim", None),
            "resolve": lambda: ("post", f"/v1/reviews/{ids[0]}/resolution", verdict),
            "override": lambda: (
                "post", f"/v1/decisions/{ids[0]}/override", {**verdict, "resolution": "reject"}
            ),
            "propose": lambda: (
                "post", f"/v1/flows/{FLOW}/policy/changes",
                {"document": policy(self.engine, float(ids[0])), "reason": "thin files"},
            ),
            "edit": lambda: (
                "put", f"/v1/policy-changes/{ids[0]}",
                {"document": policy(self.engine, float(ids[1])), "reason": "safer"},
            ),
            "approve": lambda: ("post", f"/v1/policy-changes/{ids[0]}/approvals", reason),
            "request_autonomy": lambda: (
                "post", f"/v1/flows/{FLOW}/autonomy", {"level": "autonomous", "reason": "earned"}
            ),
            "approve_autonomy": lambda: (
                "post", f"/v1/autonomy-requests/{ids[0]}/approval", reason
            ),
            "stop": lambda: ("post", f"/v1/flows/{FLOW}/stop", {**reason, "alarm": ids[0]}),
            "resolve_alarm": lambda: ("post", f"/v1/alarms/{ids[0]}/resolution", reason),
            "release": lambda: ("post", f"/v1/flows/{FLOW}/hold/lift", reason),
        }  # fmt: skip
        method, path, body = routes[step]()
        headers = {"Authorization": f"Bearer {self.bearer}"}
        response = self.client.request(method, path, json=body, headers=headers)
        return response.status_code, response.json()


@dataclass
class ServiceCaller(Caller):
    """Straight through the services (the CLI and ``keel.open`` call these)."""

    engine: Engine
    principal: Principal

    def act(self, step: str, *ids: str) -> Reply:
        e, who = self.engine, self.principal
        steps: dict[str, Callable[[], Any]] = {
            "decide_pending": lambda: e.decide(FLOW, SHORT_HISTORY, by=who),
            "decide_final": lambda: e.decide(FLOW, LOW_RISK, by=who),
            "claim": lambda: e.reviews.claim(ids[0], who),
            "resolve": lambda: e.reviews.resolve(ids[0], who, "approve", "checked"),
            "override": lambda: e.reviews.override(ids[0], who, "reject", "checked"),
            "propose": lambda: e.changes.propose(FLOW, policy(e, float(ids[0])), who, "thin"),
            "edit": lambda: e.changes.edit(ids[0], policy(e, float(ids[1])), who, "safer"),
            "approve": lambda: e.changes.approve(ids[0], who, "checked"),
            "request_autonomy": lambda: e.autonomy.request(FLOW, "autonomous", who, "earned"),
            "approve_autonomy": lambda: e.autonomy.approve(ids[0], who, "checked"),
            "stop": lambda: e.holds.stop(FLOW, who, "checked", ids[0]),
            "resolve_alarm": lambda: e.monitoring.resolve(ids[0], who, "checked"),
            "release": lambda: e.holds.lift(FLOW, who, "checked"),
        }
        try:
            done = steps[step]()
        except KeelError as error:
            return STATUS[error.code], error.to_dict()
        return 200, done.to_dict()


def ok(reply: Reply) -> dict[str, Any]:
    status, body = reply
    assert status in (200, 201), body
    return body


# Each rule: the step refused, and the words its refusal must contain.
RULES = {
    "claim": "the person who requested decision",
    "resolve": "the person who requested decision",
    "override": "the person who requested decision",
    "approve_proposed": "the person who proposed change",
    "approve_edited": "the person who edited change",
    "approve_twice": "has approved version",
    "approve_autonomy": "the person who requested autonomy raise",
    "resolve_alarm": "the person who set a hold",
    "release": "the person who stopped flow",
}


def pairs(engine: Engine, first: Caller, second: Caller, third: Caller) -> dict[str, Reply]:
    """Every rule's first act by ``first``, its second by ``second``; ``third`` is another
    person who proposes what ``first`` edits or approves. Returns each second act's reply."""
    out: dict[str, Reply] = {}
    pending = ok(first.act("decide_pending"))
    assert pending["status"] == "pending_review"
    final = ok(first.act("decide_final"))
    assert final["status"] == "final"
    out["claim"] = second.act("claim", pending["id"])
    out["resolve"] = second.act("resolve", pending["id"])
    out["override"] = second.act("override", final["id"])

    proposed = ok(first.act("propose", "900"))
    out["approve_proposed"] = second.act("approve", proposed["id"])
    edited = ok(third.act("propose", "800"))
    ok(first.act("edit", edited["id"], "700"))
    out["approve_edited"] = second.act("approve", edited["id"])
    approved = ok(third.act("propose", "600"))
    ok(first.act("approve", approved["id"]))
    out["approve_twice"] = second.act("approve", approved["id"])

    request = ok(first.act("request_autonomy"))["request"]
    out["approve_autonomy"] = second.act("approve_autonomy", request["id"])

    alarm = raise_alarm(engine)
    assert ok(first.act("stop", alarm))["hold"] == "stop"
    out["resolve_alarm"] = second.act("resolve_alarm", alarm)
    out["release"] = second.act("release")
    return out


def assert_refused(replies: dict[str, Reply], person: str) -> None:
    assert set(replies) == set(RULES)
    for rule, (status, body) in replies.items():
        assert status == 409, (rule, body)
        assert body["code"] == "conflict", (rule, body)
        assert body["message"].startswith("four eyes: "), (rule, body)
        assert RULES[rule] in body["message"] and person in body["message"], (rule, body)
        assert body["detail"]["rule"] == "four_eyes" and body["detail"]["person"] == person


@dataclass
class World:
    engine: Engine
    client: TestClient

    def key(self, owner: str, *grants: Grant, name: str = "k") -> HttpCaller:
        _, text = create_key(self.engine.db, name, owner, list(grants), "tests", time.time())
        return HttpCaller(self.client, text, self.engine)

    def token(self, email: str | None, roles: list[str], sub: str = "alice-sub") -> HttpCaller:
        return HttpCaller(self.client, token(sub=sub, email=email, keel_roles=roles), self.engine)


@contextmanager
def world(project: Path, env: dict[str, str]) -> Iterator[World]:
    """The example project with four eyes on reviews, a raise that needs no evidence, and
    an OIDC issuer (a JWKS file), served over HTTP."""
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(FLOW_SETTINGS)
    (project / "jwks.json").write_text(json.dumps({"keys": [SIGNER_JWK]}))
    with (project / "keel.yaml").open("a") as settings:
        settings.write(
            f"oidc:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
        )
    with open_engine(project, environ=env) as engine:
        audit = AuditLog(engine.db)  # closed before the engine
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            yield World(engine, client)
        audit.close()
        assert engine.verify().ok


WORKER = (Grant(Role.OWNER, FLOW), Grant(Role.APPROVER, FLOW))  # every step of both acts
WORKER_ROLES = ["owner@credit_limit", "approver@credit_limit"]


@pytest.mark.parametrize("mode", ["two_keys", "key_and_token", "admin_and_owner"])
def test_the_same_person_is_refused_every_second_step_over_http(
    project: Path, env: dict[str, str], mode: str
) -> None:
    with world(project, env) as w:
        carol = w.key("carol@example.com", Grant(Role.POLICY_AUTHOR, FLOW), name="carol")
        if mode == "two_keys":  # two keys created with the same --owner
            first = w.key("alice@example.com", *WORKER, name="alice-laptop")
            second = w.key("alice@example.com", *WORKER, name="alice-ci")
        elif mode == "key_and_token":  # a key, and a token whose email is its owner
            first = w.key("Alice@Example.com", *WORKER, name="alice")
            second = w.token("alice@example.com", WORKER_ROLES)
        else:  # an admin acting through the owner role, then through another admin key
            first = w.key("alice@example.com", Grant(Role.OWNER, FLOW), Grant(Role.ADMIN))
            second = w.key("alice@example.com", Grant(Role.ADMIN), name="alice-admin")
        replies = pairs(w.engine, first, second, carol)
        assert_refused(replies, "alice@example.com")
        # Nothing the refusals touched moved: no review resolved, no raise, still stopped.
        kinds = [e.kind for e in w.engine.entries(1000)]
        assert "review" not in kinds and kinds.count("policy_approved") == 1
        assert w.engine.runtime(FLOW).flow.autonomy == "supervised"
        assert w.engine.holds.show(FLOW, w.engine.operator).hold == "stop"


@pytest.mark.parametrize("second_by", ["key", "token"])
def test_two_different_persons_take_every_step(
    project: Path, env: dict[str, str], second_by: str
) -> None:
    """The positive control: the same acts, by two persons, all succeed."""
    with world(project, env) as w:
        carol = w.key("carol@example.com", Grant(Role.POLICY_AUTHOR, FLOW), name="carol")
        first = w.key("alice@example.com", *WORKER, name="alice")
        if second_by == "key":
            second = w.key("bob@example.com", *WORKER, name="bob")
        else:
            second = w.token("bob@example.com", WORKER_ROLES, sub="bob-sub")
        replies = pairs(w.engine, first, second, carol)
        assert {rule: status for rule, (status, _) in replies.items()} == dict.fromkeys(RULES, 200)
        approved = [e.body for e in w.engine.entries(1000, kind="policy_approved")]
        assert [a["approver"]["person"] for a in approved] == [
            "bob@example.com", "bob@example.com", "alice@example.com", "bob@example.com",
        ]  # fmt: skip
        review = w.engine.entries(10, kind="review")[0].body
        assert review["reviewer"]["person"] == "bob@example.com"
        assert review["requested_person"] == "alice@example.com"
        stopped, released = [e.body for e in w.engine.entries(2, kind="flow_hold_changed")]
        assert (stopped["hold"], stopped["set_by_person"]) == ("stop", "alice@example.com")
        assert (released["hold"], released["set_by_person"]) == ("none", "bob@example.com")
        resolved = w.engine.entries(1, kind="alarm_resolved")[0].body
        assert resolved["by_person"] == "bob@example.com"
        changes = [e.body for e in w.engine.entries(10, kind="autonomy_changed")]
        raised = next(c for c in changes if c["kind"] == "raise")
        assert (raised["requested_person"], raised["approved_person"]) == (
            "alice@example.com", "bob@example.com",
        )  # fmt: skip


def test_the_cli_operator_is_one_person_under_every_os_user(
    project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two OS users on one host are the one person local-operator: through the services
    the CLI calls, every second step is refused as for two keys of one person."""

    def operator(user: str) -> Principal:
        monkeypatch.setattr(getpass, "getuser", lambda: user)
        return local_operator()

    alice, bob = operator("alice"), operator("bob")
    assert (alice.id, bob.id) == ("local:alice", "local:bob")
    assert alice.person == bob.person == LOCAL_OPERATOR
    with world(project, env) as w:
        carol = ServiceCaller(w.engine, person("key:carol001", "Carol", "policy_author", FLOW))
        first, second = ServiceCaller(w.engine, alice), ServiceCaller(w.engine, bob)
        assert_refused(pairs(w.engine, first, second, carol), LOCAL_OPERATOR)


def test_the_cli_acts_as_a_second_person_only_through_an_api_key(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``KEEL_API_KEY`` makes the CLI act as that key's principal: a key of another owner
    approves what the operator proposed; a key the operator owns does not; a bad key fails
    the command before it acts."""
    runner = CliRunner()

    def keel(*args: str, key: str | None = None) -> tuple[int, str, str]:
        if key is None:
            monkeypatch.delenv("KEEL_API_KEY", raising=False)
        else:
            monkeypatch.setenv("KEEL_API_KEY", key)
        result = runner.invoke(cli, [*args, "-p", str(project)])
        return result.exit_code, result.stdout, result.stderr

    with open_engine(project) as engine:
        grant = [Grant(Role.APPROVER, FLOW)]
        _, own = create_key(engine.db, "mine", LOCAL_OPERATOR, grant, "t", time.time())
        _, bobs = create_key(engine.db, "bob", "bob@example.com", grant, "t", time.time())
        (project / "policies" / "credit_limit.yaml").write_text(policy(engine, 900.0))
    code, out, err = keel("policy", "propose", FLOW, "-r", "thin files")
    assert code == 0, err
    change = json.loads(out)["id"]
    code, _, err = keel("policy", "approve", change, "-r", "mine")
    assert code == 2 and "four eyes: the person who proposed change" in err
    code, _, err = keel("policy", "approve", change, "-r", "mine", key=own)
    assert code == 2 and "four eyes:" in err and LOCAL_OPERATOR in err
    code, _, err = keel("policy", "approve", change, "-r", "ok", key="keel_00000000_" + "x" * 43)
    assert code == 2 and "unknown API key" in err
    code, out, err = keel("policy", "approve", change, "-r", "checked", key=bobs)
    assert code == 0, err
    approval = json.loads(out)["approvals"][0]
    assert approval["approver"].startswith("key:") and approval["approver_person"] == (
        "bob@example.com"
    )
    code, _, err = keel("keys", "list", key=bobs)  # an approver key manages no keys
    assert code == 2 and "may not manage keys" in err


def test_persons_are_compared_normalised_and_named_by_the_credential(project: Path) -> None:
    assert person_of("  Alice@Example.COM ") == "alice@example.com"
    assert person_of("Ａｌｉｃｅ") == "alice"  # full-width letters, NFKC
    with pytest.raises(KeelError, match="a person needs a name"):
        person_of("   ")
    with world(project, {}) as w:
        unnamed = w.token(None, ["viewer"], sub="svc-7")  # no email: its own identity
        me = w.client.get(
            f"/v1/flows/{FLOW}", headers={"Authorization": f"Bearer {unnamed.bearer}"}
        )
        assert me.status_code == 200
        bad = w.token("", ["viewer"])  # a person claim that names nobody
        refused = w.client.get(
            f"/v1/flows/{FLOW}", headers={"Authorization": f"Bearer {bad.bearer}"}
        )
        assert refused.status_code == 401 and "person claim 'email'" in refused.json()["message"]
        audit = AuditLog(w.engine.db)
        keys = Keys(w.engine.db, audit)
        unowned, _ = keys.create(w.engine.operator, "ci-runner", [Grant(Role.VIEWER)])
        assert unowned.owner == "ci-runner"  # answers for itself, under its name
        with pytest.raises(KeelError, match="a key's owner names the person"):
            keys.create(w.engine.operator, "x", [Grant(Role.VIEWER)], owner="  ")
        audit.close()
        verifier = w.client.app.state.keel.oidc  # type: ignore[attr-defined]
        assert verifier.authenticate(unnamed.bearer).person == f"oidc:{ISSUER}#svc-7"
        assert verifier.authenticate(token(email="Dana@X.org")).person == "dana@x.org"


def test_a_stop_names_a_firing_alarm_of_its_flow(project: Path, env: dict[str, str]) -> None:
    with world(project, env) as w:
        owner = w.key("olga@example.com", Grant(Role.OWNER, FLOW), name="olga")
        stop = f"/v1/flows/{FLOW}/stop"
        headers = {"Authorization": f"Bearer {owner.bearer}"}
        for alarm, status in (("alm_nope", 404), ("alm\x00x", 422), ("alm\x1b[2J", 422)):
            body = {"reason": "drift", "alarm": alarm}
            refused = w.client.post(stop, json=body, headers=headers)
            assert refused.status_code == status, refused.text
        alarm = raise_alarm(w.engine)
        w.engine.monitoring.resolve(alarm, w.engine.operator, "explained")
        late = w.client.post(stop, json={"reason": "drift", "alarm": alarm}, headers=headers)
        assert late.status_code == 409 and "a stop names a firing alarm" in late.json()["message"]
        assert w.engine.holds.show(FLOW, w.engine.operator).hold == "none"  # nothing stored
