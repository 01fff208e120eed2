"""Roles, permissions and grants: who may do what, on which flow. Deny by default.

A grant gives a principal one role, on one flow or (flow ``None``) on every flow. Some
permissions concern the whole installation (the ledger, the audit trail, keys, metrics):
only a global grant carries them.

Every service checks the principal it is handed (``Principal.require``, ``visible_to``,
``flows_for``), so the Python API, the CLI and HTTP enforce one matrix. A thing on a flow
the caller may not read is answered like an unknown one (404), so nobody can probe for it.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from keel.errors import KeelError, NotFoundError
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


GLOBAL_ONLY = frozenset(
    {
        Permission.VERIFY_LEDGER,
        Permission.CHECKPOINT_LEDGER,
        Permission.READ_AUDIT,
        Permission.READ_METRICS,
        Permission.MANAGE_KEYS,
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
}


class AuthenticationError(KeelError):
    """No valid identity: a missing, malformed, unknown, expired or revoked credential."""

    code = "unauthenticated"


class PermissionDeniedError(KeelError):
    """The caller is known but no grant of theirs carries the permission, on this flow or
    globally (403)."""

    code = "forbidden"


@dataclass(frozen=True)
class Grant:
    role: Role
    flow: str | None = None  # None: every flow

    def __str__(self) -> str:
        return f"{self.role}@{self.flow or '*'}"


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "person", person_of(self.person))

    def can(self, permission: Permission, flow: str | None = None) -> bool:
        for grant in self.grants:
            if permission not in ROLE_PERMISSIONS[grant.role]:
                continue
            if grant.flow is None:
                return True
            if permission not in GLOBAL_ONLY and flow is not None and grant.flow == flow:
                return True
        return False

    def role_for(self, permission: Permission, flow: str | None = None) -> Role:
        """The role this principal acts in for ``permission`` (recorded with reviews)."""
        for grant in self.grants:
            if permission in ROLE_PERMISSIONS[grant.role] and grant.flow in (None, flow):
                return grant.role
        self.require(permission, flow)  # raises: no grant carries it
        raise AssertionError  # pragma: no cover - require() raised

    def actor(self, permission: Permission, flow: str | None = None) -> Actor:
        """This principal acting with ``permission`` on ``flow``, in the role that grants it."""
        return Actor(self.id, self.name, self.role_for(permission, flow).value, self.person)

    def require(self, permission: Permission, flow: str | None = None) -> None:
        if not self.can(permission, flow):
            where = f" on flow '{flow}'" if flow else ""
            raise PermissionDeniedError(
                f"{self.name} ({self.id}) may not {permission.value.replace('_', ' ')}{where}",
                {"permission": permission.value, "flow": flow},
            )

    def flows_with(self, permission: Permission, flows: Iterable[str]) -> list[str]:
        """The flows among ``flows`` on which this principal has ``permission``."""
        return [f for f in flows if self.can(permission, f)]

    def acting(self, permission: Permission, flow: str | None = None) -> Actor:
        """Check ``permission`` on ``flow`` (403 without it) and return the actor to record."""
        self.require(permission, flow)
        return self.actor(permission, flow)


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
