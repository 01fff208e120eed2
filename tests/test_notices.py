"""Adverse-action notices: a decline or reduced offer states its principal reasons in the
applicant's words, from the deciding rule and the model's attributions; a protected or
sensitive field is never one of them, in text or HTML, whatever its attribution."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.cli import app
from keel.engine import Engine
from keel.errors import ConflictError
from keel.explain.notice import (
    CLAMP_NOTICE,
    FALLBACK_NOTICE,
    GUARDRAIL_NOTICES,
    REVIEWED_NOTICE,
    InForce,
    NoticeTemplateError,
    principal_reasons,
)
from keel.security.audit import AuditLog, AuditTrail
from keel.security.roles import Grant, Role, local_operator
from tests.conftest import LOW_RISK, line_of, person, problems, replace_in, write
from tests.test_api import key

FLOW = "credit_limit"
FLOW_FILE = "flows/credit_limit.yaml"
POLICY_FILE = "policies/credit_limit.yaml"
RULE_NOTICE = "The risk of lending to you is higher than we accept."
HIGH_RISK = "is at or above {params.decline_risk:percent}.\n"
NOTICE = """\
notice:
  adverse_actions: [decline]
  request: requested_limit
  contact: "Consumer Credit, credit@example.com"
"""


def with_notices(project: Path, section: str = NOTICE) -> Path:
    """The example project with notices: a notice section, the deciding rule's notice
    text and a customer-language reason for one field."""
    flow = project / FLOW_FILE
    flow.write_text(flow.read_text() + section)
    replace_in(
        flow,
        "    label: Time in employment\n",
        "    label: Time in employment\n    notice_reason: Length of employment\n",
    )
    replace_in(project / POLICY_FILE, HIGH_RISK, f"{HIGH_RISK}    notice: {RULE_NOTICE}\n")
    return project


def declined(project: Path) -> dict[str, Any]:
    return dict(json.loads((project / "examples" / "declined.json").read_text()))


def adverse_pushes(engine: Engine, decision_id: str) -> list[tuple[str, float]]:
    """The features that raised the default risk, strongest first, from the explanation."""
    items = engine.explain(decision_id)["attributions"]["default_risk"]["items"]
    pushes = [(i["feature"], i["contribution"]) for i in items if i["contribution"] > 0]
    return sorted(pushes, key=lambda p: p[1], reverse=True)


def test_reasons_are_the_rule_then_the_features_that_pushed_towards_decline(
    project: Path, env: dict[str, str]
) -> None:
    with open_engine(with_notices(project), environ=env) as engine:
        decision = engine.decide(FLOW, declined(project))
        assert decision.action == "decline" and decision.rule == "high_risk"
        notice, notes = engine.notices.notice(decision.id, engine.operator)
        pushes = adverse_pushes(engine, decision.id)
        text = engine.notice(decision.id)
    flow = engine.runtime(FLOW).flow
    expected = [RULE_NOTICE] + [flow.fields[f].stated_reason for f, _ in pushes]
    assert len(pushes) >= 3 and notes == []
    assert notice.reasons == tuple(expected[:4])  # the default: four reasons
    assert notice.kind == "adverse_action" and notice.requested == "$20,200"
    for n, reason in enumerate(notice.reasons, 1):
        assert f"  {n}. {reason}\n" in text
    assert decision.id in text and "Consumer Credit, credit@example.com" in text
    assert "67%" not in text and "0.67" not in text  # the score is no reason


def test_the_flow_sets_how_many_reasons_and_each_field_its_words(
    project: Path, env: dict[str, str]
) -> None:
    section = NOTICE + "  reasons: 2\n"
    with_notices(project, section)
    replace_in(project / FLOW_FILE, "    label: Credit utilisation\n",
               "    label: Credit utilisation\n    notice_reason: Use of existing credit\n")  # fmt: skip
    with open_engine(project, environ=env) as engine:
        decision = engine.decide(FLOW, declined(project))
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        strongest = adverse_pushes(engine, decision.id)[0][0]
    assert strongest == "credit_utilization"
    assert notice.reasons == (RULE_NOTICE, "Use of existing credit")


@pytest.mark.parametrize(
    "marking",
    ["    protected: true\n    groups: [0.3, 0.6]\n", "    classification: sensitive\n"],
    ids=["protected", "sensitive"],
)
def test_a_protected_or_sensitive_field_is_never_a_stated_reason(
    project: Path, env: dict[str, str], marking: str
) -> None:
    with_notices(project)
    # The field with the largest attribution becomes protected (or sensitive), and gets
    # words of its own, so that neither its label nor its words may appear.
    flow = project / FLOW_FILE
    replace_in(flow, "    classification: personal\n    label: Credit utilisation\n",
               f"{marking}    label: Credit utilisation\n    notice_reason: Card balances\n")  # fmt: skip
    with open_engine(project, environ=env) as engine:
        decision = engine.decide(FLOW, declined(project))
        pushes = adverse_pushes(engine, decision.id)
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        text = engine.notice(decision.id, "text")
        html = engine.notice(decision.id, "html")
    assert pushes[0][0] == "credit_utilization"  # the strongest push towards decline
    assert len(notice.reasons) == 4 and "credit_utilization" not in notice.inputs
    for shown in (text, html, json.dumps(notice.to_dict())):
        for word in ("Credit utilisation", "Card balances", "utiliz", "0.8562", "86%"):
            assert word not in shown


def test_a_reduced_offer_names_the_offer_and_the_request(
    project: Path, env: dict[str, str]
) -> None:
    with open_engine(with_notices(project), environ=env) as engine:
        decision = engine.decide(FLOW, {**LOW_RISK, "requested_limit": 30000.0})
        assert (decision.action, decision.value, decision.status) == ("approve", 21250, "final")
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        text = engine.notice(decision.id)
    assert notice.kind == "reduced_offer"
    assert (notice.value, notice.requested) == ("$21,250", "$30,000")
    assert "We can offer $21,250 instead of the $30,000 you asked for." in text


def test_a_decision_that_is_not_adverse_gets_no_notice(project: Path, env: dict[str, str]) -> None:
    with open_engine(with_notices(project), environ=env) as engine:
        approved = engine.decide(FLOW, LOW_RISK)
        not_adverse = r"is not adverse \(approve \$6,000, requested \$6,000\)"
        with pytest.raises(ConflictError, match=not_adverse):
            engine.notice(approved.id)
        grey = engine.decide(FLOW, {**LOW_RISK, "credit_history_years": 0.5})
        assert grey.status == "pending_review"
        with pytest.raises(ConflictError, match=r"no action in force yet \(pending_review\)"):
            engine.notice(grey.id)


def test_a_reviewer_s_decline_is_stated_as_a_person_s_decision(
    project: Path, env: dict[str, str]
) -> None:
    with open_engine(with_notices(project), environ=env) as engine:
        grey = engine.decide(FLOW, {**LOW_RISK, "credit_history_years": 0.5})
        reviewer = person("key:rev", "Riley", "reviewer", FLOW)
        engine.reviews.resolve(grey.id, reviewer, "change", "thin file", action="decline")
        notice, _ = engine.notices.notice(grey.id, engine.operator)
    assert notice.action == "decline" and notice.reasons[0] == REVIEWED_NOTICE


def test_fallback_and_guardrail_declines_get_an_honest_reason(project: Path) -> None:
    with open_engine(with_notices(project), environ={}) as engine:
        runtime = engine.runtime(FLOW)
    flow, policy = runtime.flow, runtime.policy.policy
    assert flow.notice is not None
    decline = InForce("decline", None, "2026-11-30T10:00:00Z")

    def reasons(rule: str, *hits: dict[str, str], kind: str = "adverse_action") -> list[str]:
        body = {"rule": rule, "guardrails": {"hits": list(hits)}}
        assert flow.notice is not None
        return list(principal_reasons(flow, flow.notice, policy, body, decline, kind, {}))

    assert reasons("fallback") == [FALLBACK_NOTICE]  # a model failed: no made-up reason
    rate = {"kind": "rate", "on_hit": "fallback"}
    assert reasons("fallback", rate) == [GUARDRAIL_NOTICES["rate"]]
    clamp = {"kind": "bound", "on_hit": "clamp"}
    assert reasons("low_risk", clamp, kind="reduced_offer") == [CLAMP_NOTICE]
    assert reasons("high_risk") == [RULE_NOTICE]


def test_the_project_s_template_replaces_the_default(project: Path, env: dict[str, str]) -> None:
    with_notices(project)
    write(project / "notices" / "credit_limit.txt.j2",
          "Dear {{ notice.subject_id }}: {{ notice.reasons | join('; ') }}. "
          "Risk {{ notice.scores.default_risk | round(2) }}.\n")  # fmt: skip
    with open_engine(project, environ=env) as engine:
        decision = engine.decide(FLOW, declined(project), subject_id="cust-7")
        text = engine.notice(decision.id)
        html = engine.notice(decision.id, "html")  # no HTML template: Keel's default
    assert text.startswith(f"Dear cust-7: {RULE_NOTICE}; ") and "Risk 0.67." in text
    assert html.startswith("<!DOCTYPE html>")


def test_html_escapes_what_a_case_holds(project: Path, env: dict[str, str]) -> None:
    with_notices(project)
    flow = project / FLOW_FILE
    replace_in(flow, "  region:\n", "  applicant_name:\n    type: string\n"
               "    classification: personal\n  region:\n")  # fmt: skip
    write(project / "notices" / "credit_limit.html.j2",
          "<p>Dear {{ notice.inputs.applicant_name }},</p>\n")  # fmt: skip
    case = {**declined(project), "applicant_name": "<script>alert(1)</script>"}
    with open_engine(project, environ=env) as engine:
        decision = engine.decide(FLOW, case)
        html = engine.notice(decision.id, "html")
        viewer = person("key:viewer", "Vic", "viewer", FLOW)
        masked = engine.notices.render(decision.id, viewer, "html")
    assert html == "<p>Dear &lt;script&gt;alert(1)&lt;/script&gt;,</p>\n"
    assert "<script>" not in html
    assert masked == "<p>Dear ‹protected›,</p>\n"  # personal: only for read_personal


SANDBOX_ESCAPE = "Hello\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n"


def test_a_template_that_tries_to_leave_the_sandbox_fails_at_validate(project: Path) -> None:
    with_notices(project)
    write(project / "notices" / "credit_limit.txt.j2", SANDBOX_ESCAPE)
    found = problems(project)
    assert len(found) == 1
    assert found[0].startswith(f"{project / 'notices' / 'credit_limit.txt.j2'}:2: notice: ")
    assert "unsafe" in found[0] or "__class__" in found[0]


def test_a_broken_template_is_a_clear_error_over_http_and_the_cli(
    project: Path, env: dict[str, str]
) -> None:
    with open_engine(with_notices(project), environ=env) as engine:
        decision = engine.decide(FLOW, declined(project))
        write(project / "notices" / "credit_limit.html.j2", SANDBOX_ESCAPE)  # after start-up
        write(project / "notices" / "credit_limit.txt.j2", "{{ notice.nothing_here }}\n")
        with pytest.raises(NoticeTemplateError, match=r"credit_limit\.html\.j2:2: "):
            engine.notice(decision.id, "html")
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            headers = {**key(engine, Grant(Role.VIEWER, FLOW)), "Accept": "text/html"}
            answer = client.get(f"/v1/decisions/{decision.id}/notice", headers=headers)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_notice_template"
    # Opened again, the project itself is refused: its templates are checked at start-up.
    result = CliRunner().invoke(app, ["notice", decision.id, "--project", str(project)])
    assert result.exit_code == 2
    assert "error [invalid_definition]" in result.output
    assert "credit_limit.txt.j2:1: " in result.output and "nothing_here" in result.output


@pytest.fixture
def served(project: Path, env: dict[str, str]) -> Iterator[tuple[Engine, TestClient, str]]:
    with open_engine(with_notices(project), environ=env) as engine:
        decision = engine.decide(FLOW, declined(project))
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            yield engine, client, decision.id


def test_http_notice_in_text_html_and_json(served: tuple[Engine, TestClient, str]) -> None:
    engine, client, decision_id = served
    path = f"/v1/decisions/{decision_id}/notice"
    viewer = key(engine, Grant(Role.VIEWER, FLOW))
    text = client.get(path, headers=viewer)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text == engine.notice(decision_id, "text")
    html = client.get(path, headers={**viewer, "Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert html.text == engine.notice(decision_id, "html")
    assert client.get(f"{path}?format=html", headers=viewer).text == html.text
    data = client.get(path, headers={**viewer, "Accept": "application/json"}).json()
    assert data["reasons"][0] == RULE_NOTICE and data["notes"] == []
    assert data["inputs"]["annual_income"] == "‹protected›"  # a viewer reads no personal data
    assert client.get(f"{path}?format=pdf", headers=viewer).status_code == 422


def test_http_notice_needs_what_the_explanation_needs(
    served: tuple[Engine, TestClient, str],
) -> None:
    engine, client, decision_id = served
    path = f"/v1/decisions/{decision_id}"
    assert client.get(f"{path}/notice").status_code == 401
    for grant in (Grant(Role.DECIDER, FLOW), Grant(Role.VIEWER, "pricing")):
        headers = key(engine, grant)
        refused = client.get(f"{path}/notice", headers=headers)
        assert refused.status_code in (403, 404)
        assert refused.status_code == client.get(f"{path}/explanation", headers=headers).status_code
    approved = engine.decide(FLOW, LOW_RISK).id
    answer = client.get(
        f"/v1/decisions/{approved}/notice", headers=key(engine, Grant(Role.VIEWER, FLOW))
    )
    assert answer.status_code == 409 and "is not adverse" in answer.json()["message"]


def test_reading_a_notice_is_in_the_audit_trail(project: Path, env: dict[str, str]) -> None:
    """A notice is personal data: each request for one is audited, like an explanation's."""
    with open_engine(with_notices(project), environ=env) as engine:
        decision_id = engine.decide(FLOW, declined(project)).id
        audit = AuditLog(engine.db)
        before = engine.entries(limit=1)[0].seq
        headers = key(engine, Grant(Role.VIEWER, FLOW))
        prefix = headers["Authorization"].split("_")[1]
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            client.get(f"/v1/decisions/{decision_id}/notice", headers=headers)
            client.get(f"/v1/decisions/{decision_id}/notice")
        audit.close()
        events = [json.loads(e) for e in AuditTrail(engine.db).export(local_operator())]
        after = engine.entries(limit=1)[0].seq
    summary = [(e["principal"], e["action"], e["target"], e["outcome"]) for e in events]
    path = f"/v1/decisions/{decision_id}/notice"
    assert (f"key:{prefix}", "notice", path, "ok") in summary
    assert ("anonymous", "unknown", path, "denied") in summary
    assert after == before  # rendering records nothing in the ledger, as explaining does


def test_cli_notice_writes_a_file(project: Path) -> None:
    with open_engine(with_notices(project), environ={}) as engine:
        decision_id = engine.decide(FLOW, declined(project)).id
        expected = engine.notice(decision_id, "html")
    out = project / "notice.html"
    args = ["notice", decision_id, "--format", "html", "--out", str(out), "--project", str(project)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_text() == expected
    printed = CliRunner().invoke(app, ["notice", decision_id, "--project", str(project)])
    assert printed.exit_code == 0 and f"  1. {RULE_NOTICE}\n" in printed.output


def test_validate_warns_when_a_model_reads_a_protected_or_sensitive_field(project: Path) -> None:
    flow = project / FLOW_FILE
    replace_in(
        flow,
        "    label: Credit utilisation\n",
        "    label: Credit utilisation\n    protected: true\n    groups: [0.3, 0.6]\n",
    )
    replace_in(flow, "    classification: personal\n    label: Delinquencies in the last two years\n",
               "    classification: sensitive\n    label: Delinquencies in the last two years\n")  # fmt: skip
    features = line_of(project, FLOW_FILE, "    features:")
    result = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert result.exit_code == 0, result.output
    every = [line for line in result.output.splitlines() if line.startswith("warning")]
    warnings = [line for line in every if "the model reads" in line]
    assert len(warnings) == 2
    assert (
        f"{flow}:{features}: signals.default_risk: the model reads 'credit_utilization', which is protected"
        in warnings[0]
    )
    assert "'delinquencies_2y', which is classified sensitive" in warnings[1]
    # The example policy's rules read credit_utilization too: each such rule is named.
    rules = [line for line in every if "reads 'credit_utilization', which flow" in line]
    assert rules and len(every) == 2 + len(rules)
    assert f"{len(every)} warning(s)" in result.output
    strict = CliRunner().invoke(app, ["validate", "--strict", "--project", str(project)])
    assert strict.exit_code == 1


def test_a_notice_section_is_checked_against_the_flow_and_policy(project: Path) -> None:
    with_notices(project, NOTICE.replace("[decline]", "[decline, reject]") + "  reasons: 0\n"
                 "  adverse_when: {default_risk: sideways, other: high}\n")  # fmt: skip
    found = problems(project)
    flow = project / FLOW_FILE
    assert any(p.startswith(f"{flow}:") and "notice.reasons" in p for p in found)
    assert any("notice.adverse_when.default_risk" in p and "'sideways'" in p for p in found)
    assert any("'other' is not a signal of the flow" in p for p in found)
    replace_in(flow, "  reasons: 0\n  adverse_when: {default_risk: sideways, other: high}\n", "")
    line = line_of(project, FLOW_FILE, "adverse_actions:")
    assert problems(project) == [
        f"{flow}:{line}: notice.adverse_actions: 'reject' is not an action of policy "
        "credit_limit (approve, refer, decline)"
    ]


def test_validate_warns_when_an_adverse_rule_has_no_notice_text(project: Path) -> None:
    """A rule whose action is adverse but which says nothing in the applicant's words is
    allowed (its notices state the model's reasons), but validate says so, with its line."""
    plain = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert plain.exit_code == 0 and "warning" not in plain.output  # no notice section
    with_notices(project)  # high_risk has a notice; the three other declining rules do not
    policy = project / POLICY_FILE
    result = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert warnings == [
        f"warning  {policy}:{line_of(project, POLICY_FILE, f'  - name: {rule}')}: "
        f"rule '{rule}': its action 'decline' is one of flow credit_limit's "
        "notice.adverse_actions but it has no 'notice': the notices of its decisions would "
        "state only the model's reasons; add a 'notice' in the applicant's words"
        for rule in ("income_too_low", "recent_delinquencies", "over_indebted")
    ]
    assert "3 warning(s)" in result.output
    strict = CliRunner().invoke(app, ["validate", "--strict", "--project", str(project)])
    assert strict.exit_code == 1
    # The default decides like a rule; the fallback has Keel's own honest notice text.
    replace_in(policy, "default:\n  action: refer\n", "default:\n  action: decline\n")
    result = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert f"warning  {policy}: default: its action 'decline'" in result.output
    assert "4 warning(s)" in result.output
    for rule in ("income_too_low", "recent_delinquencies", "over_indebted"):
        text = policy.read_text()
        at = text.index("    reason:", text.index(f"  - name: {rule}\n"))
        policy.write_text(f"{text[:at]}    notice: We cannot offer credit.\n{text[at:]}")
    replace_in(
        policy, "default:\n  action: decline\n", "default:\n  action: decline\n  notice: No.\n"
    )
    result = CliRunner().invoke(app, ["validate", "--strict", "--project", str(project)])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_validate_warns_when_a_rule_decides_on_a_protected_field(project: Path) -> None:
    """A rule such as ``input.age < 25 && … → decline`` validated without a word, while a
    model reading the same field was warned about; now the rule is named, with its line."""
    flow = project / FLOW_FILE
    replace_in(flow, "  region:\n", "  age:\n    type: integer\n    required: false\n"
               "    protected: true\n    groups: [25, 40, 60]\n  region:\n")  # fmt: skip
    policy = project / POLICY_FILE
    replace_in(policy, "when: input.debt_to_income > params.max_dti",
               "when: input.debt_to_income > params.max_dti || (has(input.age) && input.age < 25)")  # fmt: skip
    when = line_of(project, POLICY_FILE, "    when: input.debt_to_income > params.max_dti")
    result = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, warnings
    assert f"{policy}:{when}:" in warnings[0] and "reads 'age'" in warnings[0]
    assert "protected characteristic" in warnings[0]


def test_a_field_the_stated_rule_speaks_of_is_not_stated_again(project: Path) -> None:
    """A decline listed "Your checking account is overdrawn." (the rule's notice) and then
    "Status of your checking account" (the model's reason for the same field). A field
    the deciding rule reads is left to the rule's own words."""
    with_notices(project)
    replace_in(project / FLOW_FILE, "    label: Credit utilisation\n",
               "    label: Credit utilisation\n    notice_reason: Use of existing credit\n")  # fmt: skip
    replace_in(project / POLICY_FILE, "signals.default_risk.score >= params.decline_risk\n",
               "signals.default_risk.score >= params.decline_risk && "
               "input.credit_utilization >= 0.0\n")  # fmt: skip
    with open_engine(project, environ={}) as engine:
        decision = engine.decide(FLOW, declined(project))
        assert decision.rule == "high_risk"
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        pushes = adverse_pushes(engine, decision.id)
    # The model's strongest push is the field the rule reads: stated once, by the rule.
    assert pushes[0][0] == "credit_utilization"
    assert notice.reasons[0] == RULE_NOTICE and "Use of existing credit" not in notice.reasons
    assert len(notice.reasons) == 4  # the other fields that pushed still fill the list
