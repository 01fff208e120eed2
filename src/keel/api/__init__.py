"""The HTTP API (FastAPI): the same engine, behind identities, roles and an audit trail."""

from keel.api.app import create_app

__all__ = ["create_app"]
