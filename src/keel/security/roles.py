"""Roles, permissions and grants: who may do what, on which flow or knowledge collection.
Deny by default.

A grant gives a principal one role. A flow role (viewer … admin) is scoped to one flow or
(flow ``None``) every flow; a knowledge role (``knowledge_owner``, ``curator``, ``reader``)
to one collection or (collection ``None``) every collection. The role says which kind of
scope its grant has, so ``reader@handbook`` names the collection ``handbook``. Some
permissions concern the whole installation (the ledger, the audit trail, keys, metrics,
creating collections): only a global grant carries them.

Reading a collection takes two checks: a role on the collection that carries
``search_knowledge``, and, per document, a key of ``Principal.access_keys`` on the
document's access list (``person:…``, ``group:…``, ``role:…``).

Every service checks the principal it is handed (``Principal.require``, ``visible_to``,
``flows_for``), so the Python API, the CLI and HTTP enforce one matrix. A thing on a flow
the caller may not read is answered like an unknown one (404), so nobody can probe for it.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from keel.errors import InputError, KeelError, NotFoundError
from keel.security.persons import LOCAL_OPERATOR, person_of


class Role(StrEnum):
    VIEWER = "viewer"
    DECIDER = "decider"
    REVIEWER = "reviewer"
    POLICY_AUTHOR = "policy_author"
    APPROVER = "approver"
    OWNER = "owner"
    AUDITOR = "auditor"
    ADMIN = "admin"
    KNOWLEDGE_OWNER = "knowledge_owner"
    CURATOR = "curator"
    READER = "reader"


# Roles whose grants are scoped to knowledge collections rather than flows.
KNOWLEDGE_ROLES = frozenset({Role.KNOWLEDGE_OWNER, Role.CURATOR, Role.READER})


class Permission(StrEnum):
    DECIDE = "decide"
    READ_DECISIONS = "read_decisions"
    READ_FLOWS = "read_flows"
    READ_PERSONAL = "read_personal"  # see personal inputs in explanations, run what-if
    REVIEW = "review"
    REPORT_OUTCOME = "report_outcome"
    PROPOSE_POLICY = "propose_policy"
    APPROVE_POLICY = "approve_policy"
    ACTIVATE_POLICY = "activate_policy"  # put an approved change into force, or roll back
    CHANGE_AUTONOMY = "change_autonomy"  # lower a flow's autonomy, or ask to raise it
    VERIFY_LEDGER = "verify_ledger"
    CHECKPOINT_LEDGER = "checkpoint_ledger"
    READ_AUDIT = "read_audit"
    READ_METRICS = "read_metrics"
    MANAGE_KEYS = "manage_keys"
    SEARCH_KNOWLEDGE = "search_knowledge"
    CURATE_KNOWLEDGE = "curate_knowledge"
    MANAGE_COLLECTION = "manage_collection"
    CREATE_COLLECTION = "create_collection"


GLOBAL_ONLY = frozenset(
    {
        Permission.VERIFY_LEDGER,
        Permission.CHECKPOINT_LEDGER,
        Permission.READ_AUDIT,
        Permission.READ_METRICS,
        Permission.MANAGE_KEYS,
        Permission.CREATE_COLLECTION,
    }
)

_READ = {Permission.READ_FLOWS, Permission.READ_DECISIONS}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(_READ),
    # A calling service decides, reports what came of its decisions and sees the flow's
    # definition; it reads the decisions it asked for (Explanations.readable), and reading
    # other decisions is someone else's job.
    Role.DECIDER: frozenset({Permission.DECIDE, Permission.READ_FLOWS, Permission.REPORT_OUTCOME}),
    Role.REVIEWER: frozenset({*_READ, Permission.REVIEW, Permission.READ_PERSONAL}),
    Role.POLICY_AUTHOR: frozenset({*_READ, Permission.PROPOSE_POLICY}),
    Role.APPROVER: frozenset(
        {
            *_READ,
            Permission.APPROVE_POLICY,
            Permission.ACTIVATE_POLICY,
            Permission.CHANGE_AUTONOMY,
        }
    ),
    Role.OWNER: frozenset(
        {
            *_READ,
            Permission.DECIDE,
            Permission.REVIEW,
            Permission.REPORT_OUTCOME,
            Permission.PROPOSE_POLICY,
            Permission.ACTIVATE_POLICY,
            Permission.CHANGE_AUTONOMY,
            Permission.READ_PERSONAL,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            *_READ,
            Permission.READ_PERSONAL,
            Permission.VERIFY_LEDGER,
            Permission.CHECKPOINT_LEDGER,
            Permission.READ_AUDIT,
            Permission.READ_METRICS,
        }
    ),
    Role.ADMIN: frozenset(Permission),
    Role.READER: frozenset({Permission.SEARCH_KNOWLEDGE}),
    Role.CURATOR: frozenset({Permission.SEARCH_KNOWLEDGE, Permission.CURATE_KNOWLEDGE}),
    Role.KNOWLEDGE_OWNER: frozenset(
        {
            Permission.SEARCH_KNOWLEDGE,
            Permission.CURATE_KNOWLEDGE,
            Permission.MANAGE_COLLECTION,
            Permission.CREATE_COLLECTION,
        }
    ),
}


# What each role is for and what each permission allows: the roles reference page is
# generated from these (`python -m keel.docs`), and it fails on one left out.
ROLE_PURPOSE: dict[Role, str] = {
    Role.VIEWER: "Reads flows and decisions.",
    Role.DECIDER: "A calling service: decides, reports what came of its decisions, reads the "
    "flow's definition, and reads (with explanation and what-if) only the decisions its "
    "person asked for; any other decision answers 404.",
    Role.REVIEWER: "Works the review queue: claims, resolves and overrides decisions; sees "
    "personal inputs.",
    Role.POLICY_AUTHOR: "Proposes and edits policy changes.",
    Role.APPROVER: "Approves changes written by someone else, activates them, rolls back and "
    "changes autonomy.",
    Role.OWNER: "The flow's accountable owner: decides, reviews, reports outcomes, proposes, "
    "activates, rolls back, lowers autonomy or asks to raise it.",
    Role.AUDITOR: "Reads everything on its flows; with a global grant verifies and "
    "checkpoints the ledger and reads metrics and the audit trail.",
    Role.ADMIN: "Everything, including managing API keys.",
    Role.KNOWLEDGE_OWNER: "A knowledge collection's accountable owner: changes its settings "
    "(owner, classification, default access list, embedding space, retention) and does "
    "what a curator does; with a global grant also creates collections.",
    Role.CURATOR: "Adds, syncs and withdraws a collection's documents and sets their access "
    "lists; searches it.",
    Role.READER: "Searches a collection: sees the chunks of the documents whose access list "
    "names the reader's person, one of their groups or one of their roles.",
}

PERMISSION_MEANING: dict[Permission, str] = {
    Permission.DECIDE: "Ask for a decision on a flow.",
    Permission.READ_DECISIONS: "Read recorded decisions, their explanations, reviews and "
    "outcomes, a flow's trust figures and drift, the model versions it used and their "
    "cards. Without it, the person who asked for a decision, through a credential with "
    "`decide` on its flow, still reads that decision, its explanation and its what-if.",
    Permission.READ_FLOWS: "Read a flow's definition, policy history and changes, autonomy, "
    "rollouts, monitor runs, alarms and deliveries.",
    Permission.READ_PERSONAL: "See personal and sensitive inputs (others see ‹protected›) "
    "and run what-if, which re-evaluates them.",
    Permission.REVIEW: "Claim, resolve and override decisions.",
    Permission.REPORT_OUTCOME: "Report what came of a decision.",
    Permission.PROPOSE_POLICY: "Propose and edit policy changes; register and replay "
    "candidate versions.",
    Permission.APPROVE_POLICY: "Approve a change one did not write; approve a raise of "
    "autonomy; lift a governor's hold; replay.",
    Permission.ACTIVATE_POLICY: "Put an approved change into force, roll back, start and "
    "stop rollouts, stop a flow (the kill switch) and release a stopped flow.",
    Permission.CHANGE_AUTONOMY: "Lower a flow's autonomy or ask to raise it, run monitors, "
    "resolve alarms, send a dead-lettered delivery again.",
    Permission.VERIFY_LEDGER: "Verify the ledger (and, deep, the tables beside it).",
    Permission.CHECKPOINT_LEDGER: "Sign a checkpoint of the ledger's head.",
    Permission.READ_AUDIT: "Export the audit trail.",
    Permission.READ_METRICS: "Read `/metrics`.",
    Permission.MANAGE_KEYS: "Create, grant, ungrant and revoke API keys.",
    Permission.SEARCH_KNOWLEDGE: "Search a knowledge collection and read the documents "
    "whose access list names one of the caller's access keys.",
    Permission.CURATE_KNOWLEDGE: "Ingest, sync and withdraw a collection's documents and "
    "versions, and set a document's access list.",
    Permission.MANAGE_COLLECTION: "Change a collection's owner, classification, default "
    "access list, embedding space (a re-index) and retention; revoke a person's access.",
    Permission.CREATE_COLLECTION: "Create a knowledge collection.",
}


class AuthenticationError(KeelError):
    """No valid identity: a missing, malformed, unknown, expired or revoked credential."""

    code = "unauthenticated"


class PermissionDeniedError(KeelError):
    """The caller is known but no grant of theirs carries the permission, on this flow or
    globally (403)."""

    code = "forbidden"


# A group a credential carries (an API key's, an OIDC token's groups claim): matched
# exactly, case included, against ``group:<name>`` on a document's access list.
GROUP_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def group_name(text: str) -> str:
    """``text`` if it is a group name; otherwise ``InputError`` saying what one looks like.
    Checked where groups enter Keel, so an access list never meets a name it cannot hold."""
    if not GROUP_PATTERN.fullmatch(text):
        raise InputError(
            f"{text!r} is not a group name: use 1 to 128 letters, digits and . _ @ -, "
            "starting with a letter or digit",
            {"field": "group", "group": text},
        )
    return text


@dataclass(frozen=True)
class Grant:
    """One role on one flow (flow roles) or one collection (knowledge roles); ``None``:
    every flow, or every collection."""

    role: Role
    flow: str | None = None  # None: every flow
    collection: str | None = None  # None: every collection

    def __post_init__(self) -> None:
        if self.role in KNOWLEDGE_ROLES and self.flow is not None:
            raise InputError(
                f"{self.role} is a knowledge role: grant it on a collection, not a flow",
                {"role": self.role.value},
            )
        if self.role not in KNOWLEDGE_ROLES and self.collection is not None:
            raise InputError(
                f"{self.role} is a flow role: grant it on a flow, not a collection",
                {"role": self.role.value},
            )

    @classmethod
    def scoped(cls, role: Role, scope: str | None) -> Grant:
        """``role`` on ``scope``: a collection for a knowledge role, else a flow."""
        if role in KNOWLEDGE_ROLES:
            return cls(role, collection=scope)
        return cls(role, scope)

    @property
    def scope(self) -> str | None:
        """The flow or collection the grant is on (``None``: all of them)."""
        return self.collection if self.role in KNOWLEDGE_ROLES else self.flow

    def __str__(self) -> str:
        return f"{self.role}@{self.scope or '*'}"


@dataclass(frozen=True)
class Actor:
    """Who took a governance step (a review, a policy change, an autonomy change, a
    rollout), in which role, and the person behind the credential: recorded with the step
    in the ledger. Made by ``Principal.actor`` once the principal's permission is checked."""

    id: str
    name: str
    role: str
    person: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role, "person": self.person}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an API key, an OIDC subject or the local operator, with
    the person behind it (separation of duties compares persons: ``keel.security.persons``)
    and its grants."""

    id: str  # "key:<prefix>", "oidc:<issuer>#<subject>" or "local:<OS user>"
    name: str
    person: str  # normalised by person_of: a key's owner, a token's person claim, …
    grants: tuple[Grant, ...] = field(default_factory=tuple)
    expires_at: float | None = None  # when the credential stops being valid (epoch seconds)
    # the groups the credential carries (an API key's, an OIDC token's groups claim)
    groups: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "person", person_of(self.person))

    def _covers(
        self, grant: Grant, permission: Permission, flow: str | None, collection: str | None
    ) -> bool:
        if permission not in ROLE_PERMISSIONS[grant.role]:
            return False
        if grant.flow is None and grant.collection is None:
            return True
        if permission in GLOBAL_ONLY:
            return False
        if grant.flow is not None:
            return flow is not None and grant.flow == flow
        return collection is not None and grant.collection == collection

    def can(
        self, permission: Permission, flow: str | None = None, *, collection: str | None = None
    ) -> bool:
        return any(self._covers(g, permission, flow, collection) for g in self.grants)

    def role_for(
        self, permission: Permission, flow: str | None = None, *, collection: str | None = None
    ) -> Role:
        """The role this principal acts in for ``permission`` (recorded with reviews)."""
        for grant in self.grants:
            if self._covers(grant, permission, flow, collection):
                return grant.role
        self.require(permission, flow, collection=collection)  # raises: no grant carries it
        raise AssertionError  # pragma: no cover - require() raised

    def access_keys(self, collection: str) -> frozenset[str]:
        """The keys a document's access list is matched against when this principal reads
        ``collection``: its person, its groups, and the roles it holds there (on the
        collection or globally). Nothing a caller passes can add to them."""
        keys = {f"person:{self.person}"}
        keys.update(f"group:{g}" for g in self.groups)
        keys.update(
            f"role:{g.role.value}"
            for g in self.grants
            if (g.flow is None and g.collection is None) or g.collection == collection
        )
        return frozenset(keys)

    def actor(
        self, permission: Permission, flow: str | None = None, *, collection: str | None = None
    ) -> Actor:
        """This principal acting with ``permission`` on ``flow`` (or ``collection``), in
        the role that grants it."""
        role = self.role_for(permission, flow, collection=collection)
        return Actor(self.id, self.name, role.value, self.person)

    def require(
        self, permission: Permission, flow: str | None = None, *, collection: str | None = None
    ) -> None:
        if not self.can(permission, flow, collection=collection):
            where = f" on flow '{flow}'" if flow else ""
            if collection:
                where = f" on collection '{collection}'"
            details: dict[str, object] = {"permission": permission.value, "flow": flow}
            if collection:
                details["collection"] = collection
            raise PermissionDeniedError(
                f"{self.name} ({self.id}) may not {permission.value.replace('_', ' ')}{where}",
                details,
            )

    def flows_with(self, permission: Permission, flows: Iterable[str]) -> list[str]:
        """The flows among ``flows`` on which this principal has ``permission``."""
        return [f for f in flows if self.can(permission, f)]

    def acting(
        self, permission: Permission, flow: str | None = None, *, collection: str | None = None
    ) -> Actor:
        """Check ``permission`` on ``flow`` or ``collection`` (403 without it) and return
        the actor to record."""
        self.require(permission, flow, collection=collection)
        return self.actor(permission, flow, collection=collection)


def visible_to(
    principal: Principal, permission: Permission, flow: str, what: str, ident: str
) -> None:
    """Answer like an unknown id (404) when the caller lacks ``permission`` on the flow of
    the thing it names: nobody can probe for what they may not see."""
    if not principal.can(permission, flow):
        raise NotFoundError(f"no {what} with id '{ident}'", {"id": ident})


def flows_for(
    principal: Principal, permission: Permission, flow: str | None, known: Iterable[str]
) -> list[str]:
    """The flows a list covers: the one asked for (403 without the permission on it), or
    every known flow on which the caller has the permission."""
    if flow is None:
        return principal.flows_with(permission, known)
    principal.require(permission, flow)
    return [flow]


def local_operator() -> Principal:
    """Whoever runs Keel on the project's own machine (the CLI, ``keel.open``): an admin,
    since they hold the store and the keys. A principal like any other: every service
    checks it. Every OS user is the one person ``local-operator``: switching OS users on a
    shared host makes no second person (act through an API key for that: ``KEEL_API_KEY``)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Principal(f"local:{name}", name, LOCAL_OPERATOR, (Grant(Role.ADMIN),))


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise KeelError(f"unknown role '{text}' (roles: {known})", {"role": text}) from None
