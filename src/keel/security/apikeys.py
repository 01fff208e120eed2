"""API keys: created with their grants, shown once, stored as a SHA-256, revocable.

A key reads ``keel_<prefix>_<secret>``: the prefix (8 hex characters) names the key in
lists and logs; the secret (32 random bytes, base64url) is never stored. Keys are 256-bit
random values, so a plain SHA-256 is the right hash (a slow password hash buys nothing),
compared in constant time.

A key may carry groups (``payroll``, ``emea``): they become ``Principal.groups``, which a
document's access list names as ``group:<name>``. They are stored beside the key, not in
the secret, so they can change without a new key.

Keys are managed through ``Keys``, which checks the acting principal (``manage_keys``,
global only) and records every change in the audit trail; the CLI is one caller of it.
``authenticate`` is what the HTTP API asks of a presented key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from keel.errors import KeelError, NotFoundError
from keel.ledger.records import iso_time
from keel.security.audit import AuditLog
from keel.security.roles import (
    AuthenticationError,
    Grant,
    Permission,
    PermissionDeniedError,
    Principal,
    Role,
    group_name,
)
from keel.store.database import Database
from keel.store.schema import api_keys, grants, key_groups

KEY_RE = re.compile(r"^keel_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ApiKey:
    prefix: str
    name: str
    owner: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    grants: tuple[Grant, ...]
    groups: tuple[str, ...] = ()

    @property
    def principal_id(self) -> str:
        return f"key:{self.prefix}"

    def status(self, now: float) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= iso_time(now):
            return "expired"
        return "active"

    def to_dict(self, now: float) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "name": self.name,
            "owner": self.owner,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
            "grants": [str(g) for g in self.grants],
            "groups": list(self.groups),
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    db: Database,
    name: str,
    owner: str,
    key_grants: Sequence[Grant],
    created_by: str,
    now: float,
    expires_at: float | None = None,
    groups: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Store a new key with its grants and groups; return it and the full key text (shown
    once). A bad group name is refused before anything is stored.

    The store step beneath ``Keys.create``: it checks no principal and records no audit
    event, so only code that already holds the store may call it (tests seeding callers).
    """
    if not name.strip():
        raise KeelError("a key needs a name that says what uses it", {"field": "name"})
    if not key_grants:
        raise KeelError("a key needs at least one role", {"field": "role"})
    if expires_at is not None and expires_at <= now:
        raise KeelError("a key's expiry must be in the future", {"field": "expires"})
    key_group_names = tuple(dict.fromkeys(group_name(g) for g in groups))
    prefix = os.urandom(4).hex()
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    created = iso_time(now)
    expires = iso_time(expires_at) if expires_at is not None else None
    with db.write(chain=False) as conn:
        conn.execute(
            insert(api_keys).values(
                prefix=prefix,
                name=name,
                owner=owner,
                secret_sha256=_digest(secret),
                created_at=created,
                created_by=created_by,
                expires_at=expires,
                revoked_at=None,
            )
        )
        conn.execute(
            insert(grants),
            [
                {
                    "principal": f"key:{prefix}",
                    "role": g.role.value,
                    "flow": g.scope,
                    "created_at": created,
                    "created_by": created_by,
                }
                for g in key_grants
            ],
        )
        _insert_groups(conn, prefix, key_group_names, created, created_by)
    key = ApiKey(
        prefix, name, owner, created, created_by, expires, None, tuple(key_grants), key_group_names
    )
    return key, f"keel_{prefix}_{secret}"


def _grants(db: Database, principal: str) -> tuple[Grant, ...]:
    with db.read() as conn:
        rows = conn.execute(
            select(grants.c.role, grants.c.flow)
            .where(grants.c.principal == principal)
            .order_by(grants.c.id)
        ).all()
    return tuple(Grant.scoped(Role(r[0]), r[1]) for r in rows)


def _insert_groups(
    conn: Connection, prefix: str, names: Sequence[str], created: str, created_by: str
) -> None:
    if names:
        conn.execute(
            insert(key_groups),
            [
                {"prefix": prefix, "group_name": g, "created_at": created, "created_by": created_by}
                for g in names
            ],
        )


def _groups(db: Database, prefix: str) -> tuple[str, ...]:
    """A key's groups, in the order they were given."""
    with db.read() as conn:
        rows = conn.execute(
            select(key_groups.c.group_name)
            .where(key_groups.c.prefix == prefix)
            .order_by(key_groups.c.id)
        ).all()
    return tuple(str(r[0]) for r in rows)


def _key(
    row: Sequence[object], key_grants: tuple[Grant, ...], groups: tuple[str, ...] = ()
) -> ApiKey:
    prefix, name, owner, _secret, created_at, created_by, expires_at, revoked_at = row
    return ApiKey(
        str(prefix),
        str(name),
        str(owner),
        str(created_at),
        str(created_by),
        str(expires_at) if expires_at else None,
        str(revoked_at) if revoked_at else None,
        key_grants,
        groups,
    )


def _get_key(db: Database, prefix: str) -> ApiKey:
    with db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    if row is None:
        raise NotFoundError(f"no API key with prefix '{prefix}'", {"prefix": prefix})
    return _key(row, _grants(db, f"key:{prefix}"), _groups(db, prefix))


def _change_grants(
    db: Database,
    prefix: str,
    add: Sequence[Grant],
    remove: Sequence[Grant],
    changed_by: str,
    now: float,
) -> ApiKey:
    """Give a key more roles or take some away; the change is whole or not at all.

    Refused, with nothing changed: an unknown or revoked key, a grant it already has, a
    grant it does not have, and taking away its last role (revoke the key instead).
    Servers pick the change up within the credential cache's second.
    """
    key = _get_key(db, prefix)
    if key.revoked_at:
        raise KeelError(
            f"key {prefix} was revoked at {key.revoked_at}; its roles can no longer change",
            {"prefix": prefix},
        )
    held = set(key.grants)
    duplicate = [str(g) for g in add if g in held]
    if duplicate:
        raise KeelError(
            f"key {prefix} already has {', '.join(duplicate)}", {"prefix": prefix, "field": "role"}
        )
    missing = [str(g) for g in remove if g not in held]
    if missing:
        raise KeelError(
            f"key {prefix} does not have {', '.join(missing)}; it has "
            f"{', '.join(str(g) for g in key.grants)}",
            {"prefix": prefix, "field": "role"},
        )
    if not held - set(remove) and not add:
        raise KeelError(
            f"that would leave key {prefix} with no role; revoke it instead (keel keys revoke)",
            {"prefix": prefix, "field": "role"},
        )
    principal = key.principal_id
    with db.write(chain=False) as conn:
        for grant in remove:
            scope = grant.scope
            flow = grants.c.flow.is_(None) if scope is None else grants.c.flow == scope
            conn.execute(
                delete(grants).where(
                    grants.c.principal == principal, grants.c.role == grant.role.value, flow
                )
            )
        if add:
            conn.execute(
                insert(grants),
                [
                    {
                        "principal": principal,
                        "role": g.role.value,
                        "flow": g.scope,
                        "created_at": iso_time(now),
                        "created_by": changed_by,
                    }
                    for g in dict.fromkeys(add)
                ],
            )
    return _get_key(db, prefix)


def _change_groups(
    db: Database,
    prefix: str,
    add: Sequence[str],
    remove: Sequence[str],
    changed_by: str,
    now: float,
) -> ApiKey:
    """Add groups to a key or take some away; the change is whole or not at all.

    Refused, with nothing changed: a bad group name, an unknown or revoked key, a group it
    already carries, one it does not carry. A key may carry no group at all. Servers pick
    the change up within the credential cache's second.
    """
    add = list(dict.fromkeys(group_name(g) for g in add))
    remove = list(dict.fromkeys(group_name(g) for g in remove))
    if not add and not remove:
        raise KeelError("name at least one group to add or remove", {"field": "group"})
    key = _get_key(db, prefix)
    if key.revoked_at:
        raise KeelError(
            f"key {prefix} was revoked at {key.revoked_at}; its groups can no longer change",
            {"prefix": prefix},
        )
    held = set(key.groups)
    duplicate = [g for g in add if g in held]
    if duplicate:
        raise KeelError(
            f"key {prefix} already carries group {', '.join(duplicate)}",
            {"prefix": prefix, "field": "group"},
        )
    missing = [g for g in remove if g not in held]
    if missing:
        carried = ", ".join(key.groups) or "none"
        raise KeelError(
            f"key {prefix} does not carry group {', '.join(missing)}; it carries {carried}",
            {"prefix": prefix, "field": "group"},
        )
    with db.write(chain=False) as conn:
        if remove:
            conn.execute(
                delete(key_groups).where(
                    key_groups.c.prefix == prefix, key_groups.c.group_name.in_(remove)
                )
            )
        _insert_groups(conn, prefix, add, iso_time(now), changed_by)
    return _get_key(db, prefix)


class Keys:
    """Key management for a principal holding ``manage_keys`` on every flow (an admin).

    Each change is a security event in the audit trail, recorded with the acting
    principal's id: ``key_created``, ``key_revoked``, ``role_granted``, ``role_removed``,
    ``groups_added``, ``groups_removed`` (``refused`` when a role or group change is
    refused, with the reason). A principal without the
    permission is refused (403), and the attempt is recorded as ``denied``.
    """

    def __init__(
        self, db: Database, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    def create(
        self,
        principal: Principal,
        name: str,
        key_grants: Sequence[Grant],
        *,
        owner: str | None = None,
        expires_in: float | None = None,
        groups: Sequence[str] = (),
    ) -> tuple[ApiKey, str]:
        """Store a new key with its grants; return it and the full key text (shown once).
        ``owner`` is the person who answers for the key: every key with the same owner is
        one person for separation of duties. It defaults to ``name`` (the key answers for
        itself). ``expires_in`` is a lifetime in seconds (default: no expiry). ``groups``
        become the key's ``Principal.groups`` (default: none)."""
        granted = [str(g) for g in key_grants]
        detail: dict[str, object] = {"name": name, "grants": granted}
        if groups:
            detail["groups"] = list(groups)
        self._require(principal, "key_created", "key:*", detail)
        now = self._clock()
        expires_at = now + expires_in if expires_in is not None else None
        owner = name if owner is None else owner
        if not owner.strip():
            raise KeelError(
                "a key's owner names the person who answers for it: give one, or leave the "
                "owner out to have the key answer for itself",
                {"field": "owner"},
            )
        key, text = create_key(
            self._db, name, owner, key_grants, principal.id, now, expires_at, groups
        )
        if key.groups:
            detail["groups"] = list(key.groups)
        self._record(principal, "key_created", key.principal_id, "ok", **detail)
        return key, text

    def list(self, principal: Principal) -> Sequence[ApiKey]:
        """Every key, oldest first, with its grants and groups (never a secret)."""
        principal.require(Permission.MANAGE_KEYS)
        with self._db.read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [
            _key(r, _grants(self._db, f"key:{r[0]}"), _groups(self._db, str(r[0]))) for r in rows
        ]

    def revoke(self, principal: Principal, prefix: str) -> ApiKey:
        """Revoke a key at once; revoking twice is an error that names when it was revoked."""
        self._require(principal, "key_revoked", f"key:{prefix}", {})
        key = _get_key(self._db, prefix)
        if key.revoked_at:
            raise KeelError(
                f"key {prefix} was already revoked at {key.revoked_at}", {"prefix": prefix}
            )
        with self._db.write(chain=False) as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.prefix == prefix)
                .values(revoked_at=iso_time(self._clock()))
            )
        key = _get_key(self._db, prefix)
        self._record(principal, "key_revoked", key.principal_id, "ok")
        return key

    def grant(self, principal: Principal, prefix: str, added: Sequence[Grant]) -> ApiKey:
        """Give a key more roles (refused for a grant it already has, or a revoked key)."""
        return self._change(principal, "role_granted", prefix, added, [])

    def ungrant(self, principal: Principal, prefix: str, removed: Sequence[Grant]) -> ApiKey:
        """Take roles away from a key (refused for one it does not have, or its last one:
        revoke the key instead)."""
        return self._change(principal, "role_removed", prefix, [], removed)

    def add_groups(self, principal: Principal, prefix: str, added: Sequence[str]) -> ApiKey:
        """Add groups to a key (refused for a bad name, one it already carries, or a
        revoked key)."""
        return self._change_groups(principal, "groups_added", prefix, added, [])

    def remove_groups(self, principal: Principal, prefix: str, removed: Sequence[str]) -> ApiKey:
        """Take groups away from a key (refused for one it does not carry); a key may be
        left with none."""
        return self._change_groups(principal, "groups_removed", prefix, [], removed)

    def _change_groups(
        self,
        principal: Principal,
        action: str,
        prefix: str,
        add: Sequence[str],
        remove: Sequence[str],
    ) -> ApiKey:
        changed = [*add, *remove]
        self._require(principal, action, f"key:{prefix}", {"groups": changed})
        try:
            key = _change_groups(self._db, prefix, add, remove, principal.id, self._clock())
        except KeelError as error:
            self._record(
                principal, action, f"key:{prefix}", "refused", groups=changed, reason=error.message
            )
            raise
        now = list(key.groups)
        self._record(principal, action, key.principal_id, "ok", groups=changed, now=now)
        return key

    def _change(
        self,
        principal: Principal,
        action: str,
        prefix: str,
        add: Sequence[Grant],
        remove: Sequence[Grant],
    ) -> ApiKey:
        changed = [str(g) for g in (*add, *remove)]
        self._require(principal, action, f"key:{prefix}", {"grants": changed})
        try:
            key = _change_grants(self._db, prefix, add, remove, principal.id, self._clock())
        except KeelError as error:
            self._record(
                principal, action, f"key:{prefix}", "refused", grants=changed, reason=error.message
            )
            raise
        held = [str(g) for g in key.grants]
        self._record(principal, action, key.principal_id, "ok", grants=changed, now=held)
        return key

    def _require(
        self, principal: Principal, action: str, target: str, detail: dict[str, object]
    ) -> None:
        """Check ``manage_keys``; an attempt without it is a security event too."""
        try:
            principal.require(Permission.MANAGE_KEYS)
        except PermissionDeniedError as error:
            self._record(principal, action, target, "denied", **detail, reason=error.message)
            raise

    def _record(
        self, principal: Principal, action: str, target: str, outcome: str, **detail: object
    ) -> None:
        self._audit.record("security", principal.id, action, target, outcome, detail)


def authenticate(db: Database, token: str, now: float) -> Principal:
    """The principal behind a presented key, or ``AuthenticationError`` saying why not."""
    match = KEY_RE.match(token)
    if match is None:
        raise AuthenticationError("not a Keel API key (keel_<prefix>_<secret>)")
    prefix, secret = match.groups()
    with db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    if row is None or not hmac.compare_digest(str(row[3]), _digest(secret)):
        raise AuthenticationError("unknown API key", {"prefix": prefix})
    key = _key(row, ())
    status = key.status(now)
    if status != "active":
        raise AuthenticationError(f"API key {prefix} is {status}", {"prefix": prefix})
    expires = row[6]
    until = (
        datetime.fromisoformat(str(expires).replace("Z", "+00:00")).timestamp() if expires else None
    )
    # The key's owner is the person behind it: four eyes compares owners, not keys.
    grants_held = _grants(db, key.principal_id)
    return Principal(key.principal_id, key.name, key.owner, grants_held, until, _groups(db, prefix))
