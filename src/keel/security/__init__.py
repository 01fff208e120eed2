"""Identity, roles and the audit trail: nobody acts without an identity and a grant."""

from keel.security.roles import (
    AuthenticationError,
    Grant,
    Permission,
    PermissionDeniedError,
    Principal,
    Role,
)

__all__ = [
    "AuthenticationError",
    "Grant",
    "Permission",
    "PermissionDeniedError",
    "Principal",
    "Role",
]
