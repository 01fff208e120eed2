"""Who wrote and approved a policy change, as its ledger entries record it.

Four eyes on a policy change compares the approver with the persons stored in
``policy_changes`` (author, editors) and ``policy_approvals`` (approvals given). Those rows
could be changed in the database; before they are compared, ``check_authorship`` checks
them against the change's ``policy_proposed``, ``policy_edited`` and ``policy_approved``
entries (each entry's hash and place in the chain checked: ``keel.ledger.anchor``), and
refuses with ``IntegrityError`` naming the first row that disagrees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from keel.ledger import anchor
from keel.store.schema import ledger


def _anchors(conn: Connection, kind: str, flow: str, since: str, change: str) -> list[Any]:
    """The change's checked entries of ``kind``, recorded from ``since`` on, in order."""
    found = conn.execute(
        select(ledger.c.record_id, ledger.c.record)
        .where(ledger.c.kind == kind, ledger.c.flow == flow, ledger.c.recorded_at >= since)
        .order_by(ledger.c.seq)
    )
    ids = [
        r.record_id for r in found if json.loads(r.record).get("body", {}).get("change") == change
    ]
    return [a for a in (anchor.entry(conn, i) for i in ids) if a is not None]


def check_authorship(
    conn: Connection, row: Mapping[str, Any], given: Sequence[Mapping[str, Any]]
) -> None:
    """``row`` (a ``policy_changes`` row) and ``given`` (its approvals of its version)
    against the entries that recorded them; ``IntegrityError`` at the first disagreement."""
    change, flow = str(row["id"]), str(row["flow"])
    proposed = _anchors(conn, "policy_proposed", flow, row["created_at"], change)
    if not proposed:
        raise anchor.refused(
            "policy_changes", change,
            f"no policy_proposed entry of flow '{flow}' at {row['created_at']} stands behind it",
            {},
        )  # fmt: skip
    first = proposed[0]
    author = first.body["author"]
    person = author.get("person")  # None: proposed before persons
    editors, persons = [author["id"]], None if person is None else [person]
    version = first.body["version"]
    for edit in _anchors(conn, "policy_edited", flow, row["created_at"], change):
        editor = edit.body["editor"]
        if editor.get("person") is not None:
            persons = persons or list(editors)
            if editor["person"] not in persons:
                persons.append(editor["person"])
        if editor["id"] not in editors:
            editors.append(editor["id"])
        version = edit.body["version"]
    stored = {**row, "editors": json.loads(row["editors"]),
              "editor_persons": json.loads(row["editor_persons"] or "null")}  # fmt: skip
    recorded = {"author": author["id"], "author_person": person, "editors": editors,
                "editor_persons": persons, "version": version}  # fmt: skip
    anchor.agree("policy_changes", change, stored, recorded, first)
    for approval in given:
        entry = anchor.entry(conn, str(approval["record_id"]))
        if entry is None or entry.kind != "policy_approved":
            raise anchor.refused(
                "policy_approvals", str(approval["record_id"]),
                "no policy_approved entry stands behind it", {"change_id": change},
            )  # fmt: skip
        approver = entry.body["approver"]
        anchor.agree(
            "policy_approvals", str(approval["record_id"]), approval,
            {"change_id": entry.body["change"], "version": entry.body["version"],
             "approver": approver["id"], "approver_person": approver.get("person")},
            entry,
        )  # fmt: skip
