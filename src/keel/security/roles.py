"""Roles, permissions and grants: who may do what, on which flow. Deny by default.

A grant gives a principal one role, on one flow or (flow ``None``) on every flow. Some
permissions concern the whole installation (the ledger, the audit trail, keys, metrics):
only a global grant carries them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from keel.errors import ConflictError, KeelError


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
    # definition; reading other decisions is someone else's job.
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


class AuthenticationError(KeelError):
    """No valid identity: a missing, malformed, unknown, expired or revoked credential."""

    code = "unauthenticated"


class PermissionDeniedError(KeelError):
    code = "forbidden"


@dataclass(frozen=True)
class Grant:
    role: Role
    flow: str | None = None  # None: every flow

    def __str__(self) -> str:
        return f"{self.role}@{self.flow or '*'}"


@dataclass(frozen=True)
class Actor:
    """Who takes a governance step (a review, a policy change, an autonomy change, a
    rollout), and in which role: recorded with the step in the ledger. The engine checks
    the role again, whatever surface the step came from."""

    id: str
    name: str
    role: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role}

    def require(self, permission: Permission, step: str) -> None:
        try:
            allowed = permission in ROLE_PERMISSIONS[Role(self.role)]
        except ValueError:
            allowed = False
        if not allowed:
            raise ConflictError(
                f"{self.id} acts as {self.role}, which may not {step}",
                {"role": self.role, "permission": permission.value},
            )


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an API key or an OIDC subject, with its grants."""

    id: str  # "key:<prefix>" or "oidc:<issuer>#<subject>"
    name: str
    grants: tuple[Grant, ...] = field(default_factory=tuple)
    expires_at: float | None = None  # when the credential stops being valid (epoch seconds)

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
        return Actor(self.id, self.name, self.role_for(permission, flow).value)

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


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise KeelError(f"unknown role '{text}' (roles: {known})", {"role": text}) from None
