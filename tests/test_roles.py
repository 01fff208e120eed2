"""Grants on flows and on knowledge collections, and the access keys a reader carries."""

from __future__ import annotations

import pytest

from keel.errors import InputError
from keel.security.roles import Grant, Permission, Principal, Role


def test_a_knowledge_grant_covers_its_collection_only() -> None:
    reader = Principal("key:r", "Rae", "rae@bank.example", (Grant(Role.READER, collection="hr"),))
    assert reader.can(Permission.SEARCH_KNOWLEDGE, collection="hr")
    assert not reader.can(Permission.SEARCH_KNOWLEDGE, collection="legal")
    assert not reader.can(Permission.SEARCH_KNOWLEDGE)  # no collection named
    assert not reader.can(Permission.CURATE_KNOWLEDGE, collection="hr")
    assert not reader.can(Permission.READ_FLOWS, "hr")  # a collection is not a flow


def test_a_flow_grant_does_not_reach_a_collection_of_the_same_name() -> None:
    owner = Principal("key:o", "Olu", "olu@bank.example", (Grant(Role.OWNER, "hr"),))
    assert owner.can(Permission.READ_FLOWS, "hr")
    assert not owner.can(Permission.SEARCH_KNOWLEDGE, collection="hr")


def test_creating_a_collection_takes_a_global_grant() -> None:
    scoped = Principal("key:s", "S", "s", (Grant(Role.KNOWLEDGE_OWNER, collection="hr"),))
    anywhere = Principal("key:g", "G", "g", (Grant(Role.KNOWLEDGE_OWNER),))
    assert scoped.can(Permission.MANAGE_COLLECTION, collection="hr")
    assert not scoped.can(Permission.CREATE_COLLECTION, collection="hr")
    assert anywhere.can(Permission.CREATE_COLLECTION)
    admin = Principal("key:a", "A", "a", (Grant(Role.ADMIN),))
    assert admin.can(Permission.SEARCH_KNOWLEDGE, collection="hr")


def test_a_grant_refuses_the_wrong_kind_of_scope() -> None:
    with pytest.raises(InputError, match="knowledge role"):
        Grant(Role.READER, "credit_limit")
    with pytest.raises(InputError, match="flow role"):
        Grant(Role.VIEWER, collection="hr")
    assert Grant.scoped(Role.READER, "hr") == Grant(Role.READER, collection="hr")
    assert Grant.scoped(Role.VIEWER, "hr") == Grant(Role.VIEWER, "hr")
    assert str(Grant(Role.CURATOR, collection="hr")) == "curator@hr"


def test_access_keys_name_the_person_groups_and_roles_held_on_the_collection() -> None:
    caller = Principal(
        "oidc:idp#7",
        "Rae",
        "Rae@Bank.example",
        (Grant(Role.READER, collection="hr"), Grant(Role.CURATOR, collection="legal")),
        groups=("payroll", "emea"),
    )
    assert caller.access_keys("hr") == {
        "person:rae@bank.example",
        "group:payroll",
        "group:emea",
        "role:reader",
    }
    assert "role:curator" in caller.access_keys("legal")
    assert "role:reader" not in caller.access_keys("legal")
